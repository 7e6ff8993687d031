// What `verify` prints: Markdown for the pull request (the failing probes first and by name,
// then every probe), or JSON. Pure. Every cell carries text from the state or the network
// (probe answers), so it goes through mdCell (one line, pipes and backticks neutralised).
import { mdCell } from '../rollout/fleet.js';
import type { VerifyReport } from './verify.js';

const HEADLINE: Record<VerifyReport['verdict'], string> = {
  passed: 'passed',
  failed: 'FAILED',
  invalid: 'FAILED: the revision is not a valid state',
  refused: 'NOT RUN: verify cannot run this state',
  interrupted: 'NOT FINISHED: interrupted',
  error: 'NOT RUN: error',
};

const mark = (ok: boolean) => (ok ? '✅' : '❌');

export function verifyMarkdown(r: VerifyReport): string {
  const rev = r.revision ? `\`${r.revision.slice(0, 12)}\`` : mdCell(r.rev);
  const out = [`### cgw-sync verify ${rev}: ${HEADLINE[r.verdict]}`, ''];
  if (r.lab) {
    const passed = r.results.filter((x) => x.ok).length;
    out.push(`${r.lab.nodes.length} node(s) (${r.lab.nodes.join(', ')}), ${r.lab.guests} guest(s), ${r.lab.forwards} forward(s), NAT mode ${r.lab.mode}, br_netfilter ${r.lab.brNetfilter ? 'on' : 'off'}: **${passed} passed, ${r.results.length - passed} failed** on the real kernel in ${(r.ms / 1000).toFixed(1)} s.`, '');
  }
  if (r.diagnostics) out.push('```', r.diagnostics.replace(/```/g, "'''"), '```', '');
  if (r.error) out.push('```', r.error.replace(/```/g, "'''"), '```', '');
  if (r.refusals?.length) out.push(...r.refusals.map((x) => `- ${mdCell(x)}`), '');
  const failed = r.results.filter((x) => !x.ok);
  if (failed.length) out.push('**Failing probes:**', '', ...failed.map((x) => `- ❌ ${mdCell(x.name)}: ${mdCell(x.detail)}`), '');
  if (r.results.length) {
    out.push(`<details${failed.length ? '' : ' open'}><summary>All ${r.results.length} probes</summary>`, '', '| | probe | answer |', '|---|---|---|');
    out.push(...r.results.map((x) => `| ${mark(x.ok)} | ${mdCell(x.name)} | ${mdCell(x.detail)} |`), '', '</details>', '');
  }
  if (r.notes.length) out.push(...r.notes.map((n) => `> ${mdCell(n)}`), '');
  return `${out.join('\n').trimEnd()}\n`;
}

export function verifyJson(r: VerifyReport): string {
  return `${JSON.stringify(r, null, 2)}\n`;
}
