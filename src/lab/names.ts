// The lab's names the CLI's command definitions show, apart from the lab itself so that defining
// the commands does not load the lab (and everything it runs).
export const DEFAULT_LAB_PREFIX = 'cgwlab-';

/** What `lab restart` can restart. */
export const LAB_RESTARTABLE = ['git'] as const;

/** `lab up --nodes` at most: each node is a namespace with two bridges, an agent and probes from one client. */
export const MAX_LAB_NODES = 8;
