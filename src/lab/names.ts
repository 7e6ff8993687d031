// The lab's names the CLI's command definitions show, apart from the lab itself so that defining
// the commands does not load the lab (and everything it runs).
export const DEFAULT_LAB_PREFIX = 'cgwlab-';

/** What `lab restart` can restart. */
export const LAB_RESTARTABLE = ['git'] as const;

/** `lab up --nodes` at most: each node is a namespace with two bridges, an agent and probes from one client. */
export const MAX_LAB_NODES = 8;

/** Why `--nodes n` is refused before the seed state is even read, or undefined. */
export function labNodesProblem(n: number): string | undefined {
  if (!Number.isInteger(n) || n < 1) return `--nodes must be a whole number of nodes, not ${n}`;
  if (n > MAX_LAB_NODES) return `--nodes ${n}: the lab runs at most ${MAX_LAB_NODES} nodes (each is a namespace with two bridges, an agent and probes from one client)`;
  return undefined;
}
