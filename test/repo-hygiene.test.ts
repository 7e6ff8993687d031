// The repository's tracked files carry no merge-conflict markers: a conflict resolved in a hurry
// must not land in the docs or the code unnoticed (this happened once in docs/state-format.md).
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from './helpers/agent-fixture.js';

describe('repository hygiene', () => {
  it('no tracked file has a line that starts a conflict block, separates or ends one', async () => {
    // -I skips binaries; exit 1 means no line matched.
    const marker = ['<'.repeat(7) + ' ', '='.repeat(7) + '$', '>'.repeat(7) + ' '].map((m) => `^${m}`).join('|');
    const r = await execa('git', ['grep', '-n', '-I', '-E', marker], { cwd: PROJECT_ROOT, reject: false });
    expect(r.stdout).toBe('');
    expect(r.exitCode).toBe(1);
  });
});
