// REPORT.md shows the last lines of a failing hook's output: capped in lines and bytes, redacted,
// and fenced so that nothing a hook prints (backtick fences, HTML, headings, links, a secret, control
// characters) can leave the block. Pure tests of the tail, then a real agent whose pre-apply hook
// vetoes, its report read from the status branch of a real git smart-HTTP server.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOOK_TAIL, outputTail } from '../src/agent/report.js';
import { readPublished, stateExampleFiles, startTestAgent, type TestAgent } from './helpers/agent-fixture.js';
import { startGitFixture, type GitFixture } from './helpers/git-server.js';

/** The body of the first fenced block after the line starting with `heading`, and the rest of the document after its closing fence. */
function fencedAfter(markdown: string, heading: string): { body: string[]; after: string[] } {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.startsWith(heading));
  expect(start, `no line starts with ${heading}`).toBeGreaterThanOrEqual(0);
  const open = lines.findIndex((l, i) => i > start && /^`{3,}/.test(l));
  const fence = (lines[open] as string).match(/^`+/)?.[0] as string;
  // CommonMark: a closing fence is a run of at least as many backticks, alone on its line (up to 3 spaces before).
  const close = lines.findIndex((l, i) => i > open && new RegExp(`^ {0,3}${fence}\`*\\s*$`).test(l));
  return { body: lines.slice(open + 1, close), after: lines.slice(close + 1) };
}

describe('outputTail', () => {
  it('keeps the last lines within the line and byte limits and counts what it left out', () => {
    const out = Array.from({ length: 50 }, (_, i) => `line ${i}`).join('\n');
    expect(outputTail(`${out}\n`)).toEqual({ text: Array.from({ length: HOOK_TAIL.lines }, (_, i) => `line ${30 + i}`).join('\n'), lines: 20, omitted: 30 });
    expect(outputTail('a\nbb\nccc', { lines: 10, bytes: 8 })).toEqual({ text: 'bb\nccc', lines: 2, omitted: 1 });
    expect(outputTail('short')).toEqual({ text: 'short', lines: 1, omitted: 0 });
  });

  it('a single line longer than the byte limit keeps its end, never half a character', () => {
    const tail = outputTail(`start ${'é'.repeat(3000)} END`, { lines: 20, bytes: 100 });
    expect(Buffer.byteLength(tail.text)).toBeLessThanOrEqual(100);
    expect(tail.text).toMatch(/^…é+ END$/);
  });
});

describe('REPORT.md: the output of a failing hook', () => {
  let fx: GitFixture;
  let agent: TestAgent;
  let hooksDir: string;
  const SECRET = 'report-hooks-secret-0123456789';
  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles() });
    const dir = await fx.tmp('hooks');
    hooksDir = path.join(dir, 'hooks');
    await mkdir(hooksDir);
    // The hook's environment holds a secret (hookEnv): the report must not.
    agent = await startTestAgent(fx, 'node1', { hooksDir, hookEnv: { HOOK_TOKEN: SECRET } });
  });
  afterAll(async () => {
    await agent?.destroy();
    await fx?.cleanup();
  });

  it('shows its last lines, redacted and fenced: a hook cannot close the block or inject Markdown or HTML', async () => {
    const hostile = [
      'for i in $(seq 1 40); do echo "early line $i"; done',
      "printf '%s\\n' '```' '````````' '~~~' '</pre><script>alert(1)</script>' '# pwned heading' '[click](javascript:alert(1))'",
      'printf "token %s\\n" "$HOOK_TOKEN"',
      "printf 'bell \\007 escape \\033[31m red\\n'",
      'echo "refusing: no changes on Fridays" >&2',
      'exit 3',
    ];
    await writeFile(path.join(hooksDir, 'pre-apply'), `#!/bin/sh\n${hostile.join('\n')}\n`);
    await chmod(path.join(hooksDir, 'pre-apply'), 0o755);
    const status = await agent.cycle();
    expect(status.outcome).toBe('vetoed');

    const md = (await readPublished(fx, 'node1'))?.markdown ?? '';
    expect(md).toContain(`- pre-apply \`${path.join(hooksDir, 'pre-apply')}\`: FAILED (exit 3)`);
    expect(md).toContain(`failed; its last ${HOOK_TAIL.lines} of 49 lines:`);
    const { body, after } = fencedAfter(md, 'pre-apply `');
    expect(body).toHaveLength(HOOK_TAIL.lines);
    expect(body.at(-1)).toBe('refusing: no changes on Fridays');
    expect(body).toContain('</pre><script>alert(1)</script>');
    expect(body).toContain('# pwned heading');
    expect(body).toContain('```');
    expect(body).toContain('token ***');
    expect(body).toContain('bell \\u{7} escape \\u{1b}[31m red');
    expect(body.join('\n')).not.toContain('early line 29');
    // Nothing of the hook's output outside the block; the report goes on with its own sections.
    expect(after.join('\n')).not.toMatch(/pwned|script|refusing/);
    expect(after.find((l) => l.startsWith('## '))).toBe('## Timings (ms)');
    expect(md).not.toContain(SECRET);
  });
});
