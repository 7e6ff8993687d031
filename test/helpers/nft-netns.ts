// A throwaway network namespace with an nft backend aimed at it. Every integration test that
// touches nftables goes through this, so nothing ever reaches the host's root-namespace ruleset.
import { randomBytes } from 'node:crypto';
import { createNamespace, deleteNamespace, runIn } from '../../src/netns/netns.js';
import { NftCli } from '../../src/nft/backend.js';

export interface NftNamespace {
  ns: string;
  nft: NftCli;
  /** Run raw `nft` args inside the namespace (for setting up foreign tables or hand-made drift). */
  raw(args: string[]): Promise<string>;
  destroy(): Promise<void>;
}

export function uniqueName(tag: string): string {
  return `cgwt-${tag}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

export async function nftNamespace(tag: string): Promise<NftNamespace> {
  const ns = uniqueName(tag);
  await createNamespace(ns);
  return {
    ns,
    nft: new NftCli({ prefix: ['ip', 'netns', 'exec', ns] }),
    raw: async (args) => (await runIn(ns, 'nft', args)).stdout,
    destroy: () => deleteNamespace(ns),
  };
}
