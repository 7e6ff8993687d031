// OpenPGP verification of Git commit signatures with openpgp directly (the isomorphic-git pgp
// plugin is broken). A commit object carries its signature in the `gpgsig` header; the signed
// data is the commit object without that header (isomorphic-git's readCommit gives it as
// `payload`). Git signs those exact bytes, so the payload is verified as binary data.
import * as openpgp from 'openpgp';

export type SignatureRefusal = 'unsigned' | 'bad-signature' | 'untrusted-key';

export type SignatureCheck =
  | { ok: true; fingerprint: string }
  | { ok: false; refusal: SignatureRefusal; reason: string; signedBy?: string };

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
    const signedBy = `signed by key ${signerIds.join(', ') || '(no key id)'}`;
    return { ok: false, refusal: 'untrusted-key', reason: `${signedBy}, which is not trusted`, signedBy };
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

// ---- Node keys: each node signs its status commits; the state holds each node's public key ----

/**
 * One node's public key from the state (untrusted text). Throws with a message that never
 * quotes the text: a private key pasted by mistake must not travel on into reports and logs.
 */
export async function readNodePublicKey(armored: string): Promise<openpgp.PublicKey> {
  if (/PRIVATE KEY/.test(armored)) throw new Error('is a private key: put the public key here (the private key is secret and now compromised: make a new one)');
  let keys: openpgp.Key[];
  try {
    keys = await openpgp.readKeys({ armoredKeys: armored });
  } catch (e) {
    throw new Error(`is not an armored OpenPGP public key (${(e as Error).message.split('\n')[0]?.slice(0, 120)})`);
  }
  if (keys.length !== 1) throw new Error(`holds ${keys.length} keys; give exactly one public key per node`);
  const key = keys[0] as openpgp.Key;
  if (key.isPrivate()) throw new Error('is a private key: put the public key here (the private key is secret and now compromised: make a new one)');
  return key as openpgp.PublicKey;
}

/** The node's own signing key (its agent configuration's status.signingKey file). Unencrypted. */
export async function readSigningKey(armored: string): Promise<openpgp.PrivateKey> {
  let key: openpgp.PrivateKey;
  try {
    key = await openpgp.readPrivateKey({ armoredKey: armored });
  } catch (e) {
    throw new Error(`not an armored OpenPGP private key (${(e as Error).message.split('\n')[0]?.slice(0, 120)})`);
  }
  // An agent runs unattended: a passphrase would have to sit next to the key anyway.
  if (!key.isDecrypted()) throw new Error('the private key is protected by a passphrase; the agent needs an unprotected key (file mode 0600)');
  return key;
}

/** A detached armored signature over exactly `payload`'s bytes (what verifyCommitSignature checks). */
export async function signPayload(key: openpgp.PrivateKey, payload: string): Promise<string> {
  const message = await openpgp.createMessage({ binary: new TextEncoder().encode(payload) });
  return (await openpgp.sign({ message, signingKeys: key, detached: true, format: 'armored' })) as string;
}

/** isomorphic-git's onSign callback signing with `key` (the secretKey it passes is ignored). */
export function commitSigner(key: openpgp.PrivateKey): (args: { payload: string }) => Promise<{ signature: string }> {
  return async ({ payload }) => ({ signature: await signPayload(key, payload) });
}

/** A new key pair for a node (init, the lab). Ed25519: small keys, fast signatures. */
export async function generateNodeKey(node: string): Promise<{ privateKey: string; publicKey: string; fingerprint: string }> {
  const { privateKey, publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ name: `cgw-sync node ${node}` }], format: 'armored' });
  const fingerprint = (await openpgp.readKey({ armoredKey: publicKey })).getFingerprint();
  return { privateKey, publicKey, fingerprint };
}
