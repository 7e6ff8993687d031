// The nodes' public status keys (`statusKey:` in nodes/<node>.yaml): the keys other nodes check
// a node's report commits against (src/agent/status-source.ts). The state is untrusted, so a key
// is capped in size, must be one armored public key, and a private key pasted by mistake is
// refused without ever quoting it (a diagnostic travels into reports and logs).
// The shape is checked with the other semantic checks (pure); parsing needs openpgp (async, and
// loaded only when a state declares keys).
import type { Check, Locator } from './semantic.js';
import type { Diagnostic, NodeSpec } from './types.js';

/** An armored Ed25519 key is ~0.7 KiB, RSA-4096 ~3.2 KiB; far more is not a public key. */
export const STATUS_KEY_MAX_CHARS = 16 * 1024;

const PUBLIC_ARMOR = '-----BEGIN PGP PUBLIC KEY BLOCK-----';

/** Why `text` cannot be a node's public key, judged without parsing it; undefined when it may be. */
export function statusKeyShapeProblem(text: string): string | undefined {
  if (/PRIVATE KEY/.test(text)) return 'is a private key: the state may only hold the public key (`gpg --armor --export`); the private key is now compromised: make a new one and remove this one from the Git history';
  if (text.length > STATUS_KEY_MAX_CHARS) return `is ${text.length} characters long; an armored public key is far shorter (limit ${STATUS_KEY_MAX_CHARS})`;
  if (!text.trimStart().startsWith(PUBLIC_ARMOR)) return `must be an armored OpenPGP public key starting with ${PUBLIC_ARMOR}`;
  // openpgp reads the first armored block and ignores the rest: one block, or the rest is unseen.
  const blocks = text.split('-----BEGIN PGP').length - 1;
  if (blocks > 1) return `holds ${blocks} armored blocks; give exactly one public key per node`;
  return undefined;
}

export const statusKeys: Check = (ctx) => {
  const { cluster, nodes } = ctx.input;
  for (const node of nodes) {
    const problem = node.statusKey !== undefined && statusKeyShapeProblem(node.statusKey);
    if (problem) ctx.report(node, ['statusKey'], problem);
    if (cluster?.statusSignatures === 'required' && node.statusKey === undefined) {
      ctx.report(node, ['name'], `node ${node.name} has no statusKey, and ${ctx.where(cluster, ['statusSignatures'])} requires signed reports of every node`);
    }
  }
};

/**
 * Parse every well-shaped key: one public key each, able to sign, and no key shared by two nodes
 * (one node could then speak for the other).
 */
export async function statusKeyDiagnostics(nodes: NodeSpec[], locate: Locator): Promise<Diagnostic[]> {
  const keyed = nodes.filter((n) => n.statusKey !== undefined && !statusKeyShapeProblem(n.statusKey));
  if (keyed.length === 0) return [];
  const { readNodePublicKey } = await import('../git/signature.js');
  const out: Diagnostic[] = [];
  const owners = new Map<string, NodeSpec>();
  for (const node of keyed) {
    const at = (message: string) => out.push({ ...locate(node, ['statusKey']), message });
    try {
      const key = await readNodePublicKey(node.statusKey as string);
      await key.getSigningKey().catch((e: Error) => {
        throw new Error(`cannot sign: ${e.message.split('\n')[0]?.slice(0, 120)} (expired or revoked?)`);
      });
      const fingerprint = key.getFingerprint();
      const first = owners.get(fingerprint);
      if (first) at(`is the same key as node ${first.name}'s; each node needs its own key`);
      else owners.set(fingerprint, node);
    } catch (e) {
      at((e as Error).message);
    }
  }
  return out;
}
