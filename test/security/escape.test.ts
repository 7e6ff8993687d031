// Adversarial group "state files": how values from untrusted files are shown in messages.
import { describe, expect, it } from 'vitest';
import { escapeText, formatFieldPath, quoteValue } from '../../src/state/diagnostics.js';

describe('quoteValue / escapeText', () => {
  it.each([
    { value: 'guest1', shown: '"guest1"' },
    { value: 'a\u200bb', shown: '"a\\u200bb"' },
    { value: 'x\u202ey', shown: '"x\\u202ey"' },
    { value: 'x\u0435n', shown: '"x\\u0435n"' },
    { value: '\x1b[2J', shown: '"\\x1b[2J"' },
    { value: 'a\nb\tc"d\\e', shown: '"a\\nb\\tc\\"d\\\\e"' },
    { value: '```', shown: '"\\x60\\x60\\x60"' },
    { value: '\u{1f600}', shown: '"\\u{1f600}"' },
    { value: '\ufeff', shown: '"\\ufeff"' },
    { value: 'a'.repeat(61), shown: `"${'a'.repeat(60)}…" (61 chars)` },
    { value: '\u{1f600}'.repeat(70), shown: `"${'\\u{1f600}'.repeat(60)}…" (70 chars)` },
    { value: Infinity, shown: '.inf' },
    { value: -Infinity, shown: '-.inf' },
    { value: NaN, shown: '.nan' },
    { value: 8080, shown: '8080' },
    { value: null, shown: 'null' },
    { value: [1], shown: 'a list' },
    { value: { a: 1 }, shown: 'a mapping' },
  ])('$value', ({ value, shown }) => {
    expect(quoteValue(value)).toBe(shown);
  });

  it('caps a 20 MB string to a short excerpt', () => {
    const shown = escapeText('\x07'.repeat(20_000_000));
    expect(shown.length).toBeLessThan(300);
    expect(shown).toMatch(/^(\\x07){60}… \(20000000 chars\)$/);
  });

  it('quotes keys that are not identifiers in field paths', () => {
    expect(formatFieldPath(['forwards', 1, '<<'])).toBe('forwards[1]["<<"]');
    expect(formatFieldPath(['port\u200b'])).toBe('["port\\u200b"]');
    expect(formatFieldPath(['uplink', 'interface'])).toBe('uplink.interface');
    expect(formatFieldPath(['k'.repeat(61)])).toBe(`["${'k'.repeat(60)}…" (61 chars)]`);
  });
});
