// OpenPGP verification of Git commit signatures with openpgp directly (the isomorphic-git pgp
// plugin is broken). A commit object carries its signature in the `gpgsig` header; the signed
// data is the commit object without that header (isomorphic-git's readCommit gives it as
// `payload`). Git signs those exact bytes, so the payload is verified as binary data.
import * as openpgp from 'openpgp';

export type SignatureRefusal = 'unsigned' | 'bad-signature' | 'untrusted-key';

export type SignatureCheck =
  | { ok: true; fingerprint: string }
  | { ok: false; refusal: SignatureRefusal; reason: string };

/** Parse armored public keys (each text may hold several keys). Throws on malformed input. */
export async function readTrustedKeys(armored: string[]): Promise<openpgp.PublicKey[]> {
  const keys: openpgp.PublicKey[] = [];
  for (const text of armored) {
    const parsed = await openpgp.readKeys({ armoredKeys: text });
    // A private key handed in by mistake still only contributes its public part.
    keys.push(...parsed.map((k) => k.toPublic()));
  }
  return keys;
}

/** Check a detached armored signature over `payload` against the trusted keys. */
export async function verifyCommitSignature(
  gpgsig: string | undefined,
  payload: string,
  trusted: openpgp.PublicKey[],
): Promise<SignatureCheck> {
  if (!gpgsig) return { ok: false, refusal: 'unsigned', reason: 'commit is not signed' };
  let signature: openpgp.Signature;
  try {
    signature = await openpgp.readSignature({ armoredSignature: gpgsig });
  } catch (e) {
    return { ok: false, refusal: 'bad-signature', reason: `unreadable signature: ${(e as Error).message}` };
  }
  const signerIds = signature.getSigningKeyIDs().map((id) => id.toHex());
  const signer = trusted.find((k) => k.getKeyIDs().some((id) => signerIds.includes(id.toHex())));
  if (!signer) {
    return { ok: false, refusal: 'untrusted-key', reason: `signed by key ${signerIds.join(', ') || '(no key id)'}, which is not trusted` };
  }
  try {
    const result = await openpgp.verify({
      message: await openpgp.createMessage({ binary: new TextEncoder().encode(payload) }),
      signature,
      verificationKeys: [signer],
    });
    // Every signature packet must verify; openpgp rejects `verified` when one does not.
    for (const s of result.signatures) await s.verified;
    if (result.signatures.length === 0) throw new Error('no signature packet');
  } catch (e) {
    return { ok: false, refusal: 'bad-signature', reason: `signature does not verify: ${(e as Error).message}` };
  }
  return { ok: true, fingerprint: signer.getFingerprint() };
}
