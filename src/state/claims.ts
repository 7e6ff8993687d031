// Uniqueness claims shared by the cross-document checks (semantic.ts and the checks it lists). Pure.
import type { FieldPath } from './diagnostics.js';
import type { CheckContext, Located } from './semantic.js';

/** One use of a value that must be unique (a name, an address, ...). */
export interface Claim {
  object: Located;
  path: FieldPath;
  value: string;
  /** Who holds it, for the message about the second holder, e.g. `nodeIP of node "node1"`. */
  owner: string;
}

export function claim(object: Located, path: FieldPath, value: string, owner: string): Claim {
  return { object, path, value, owner };
}

export type DuplicateMessage = (value: string, first: { owner: string; where: string }) => string;

/** Reports every claim after the first on the same value. */
export function reportDuplicates(ctx: CheckContext, claims: Claim[], message: DuplicateMessage): void {
  const firsts = new Map<string, Claim>();
  for (const c of claims) {
    const first = firsts.get(c.value);
    if (!first) {
      firsts.set(c.value, c);
      continue;
    }
    ctx.report(c.object, c.path, message(c.value, { owner: first.owner, where: ctx.where(first.object, first.path) }));
  }
}

/** The message for most duplicates: `x is already used as <owner> (<file:line:col>)`. */
export const alreadyUsed: DuplicateMessage = (value, first) => `${value} is already used as ${first.owner} (${first.where})`;
