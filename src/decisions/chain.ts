import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArbiterError } from '../errors.ts';
import { isObject } from '../is-object.ts';
import { createPrivateFileWhole, makePrivateDirSync, readPrivateJson } from '../private-files.ts';
import { canonicalJson, sha256Hex } from './canonical-json.ts';

/** prev_hash of the first record ever appended. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * hash = hex(SHA-256(prev_hash "\n" seq "\n" body)), body being the canonical JSON of the
 * stored record. The seq is part of it so rows cannot be renumbered to hide a deletion.
 */
export function chainHash(prevHash: string, seq: number, body: string): string {
  return sha256Hex(`${prevHash}\n${seq}\n${body}`);
}

/**
 * A signed statement "the record at `seq` has `hash`". A checkpoint states it for a
 * record still in the log (so truncating or rewriting the log behind it shows); an
 * anchor states it for the last record pruned by retention, or for genesis (seq 0) in a
 * log nothing was pruned from (so the chain starts after it). `kind` is signed too: one
 * cannot be passed off as the other.
 */
export interface SignedMark {
  kind: 'checkpoint' | 'anchor';
  seq: number;
  hash: string;
  /** checkpoint: records appended up to seq; anchor: records pruned up to seq. */
  record_count: number;
  /**
   * The seq whose record the writer commits with the next checkpoint at the latest, so
   * that a record at or past it without one shows deleted checkpoints. Not signed before
   * schema version 3.
   */
  next_by?: number;
  created_at: number;
  key_id: string;
  signature: string;
}

export type UnsignedMark = Omit<SignedMark, 'signature' | 'key_id'>;

/** A row of the checkpoints or anchors table. */
export type MarkRow = Omit<SignedMark, 'kind' | 'next_by'> & { next_by: number | null };

/**
 * The mark a stored row states. next_by is NULL in marks signed before schema version 3,
 * whose signatures do not cover it: it is then left out, as it was when they were signed.
 */
export function markFromRow(row: MarkRow, kind: SignedMark['kind']): SignedMark {
  const { seq, hash, record_count, created_at, key_id, signature, next_by } = row;
  const mark: SignedMark = { kind, seq, hash, record_count, created_at, key_id, signature };
  if (next_by !== null) mark.next_by = next_by;
  return mark;
}

export interface CheckpointKey {
  /** RFC 7638 thumbprint of the public key, stored with each signature. */
  id: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function signMark(mark: UnsignedMark, key: CheckpointKey): SignedMark {
  const signed = { ...mark, key_id: key.id };
  const signature = sign(null, Buffer.from(canonicalJson(signed)), key.privateKey).toString('base64url');
  return { ...signed, signature };
}

/** What checking a signature needs: the public half (an auditor verifying a copy of the log need hold no more). */
export type CheckpointPublicKey = Pick<CheckpointKey, 'id' | 'publicKey'>;

export function markSignatureValid(mark: SignedMark, key: CheckpointPublicKey): boolean {
  if (mark.key_id !== key.id) return false;
  const { signature, ...signed } = mark;
  return verify(null, Buffer.from(canonicalJson(signed)), key.publicKey, Buffer.from(signature, 'base64url'));
}

/**
 * Loads the Ed25519 checkpoint key (a private JWK) or, when the file does not exist,
 * generates one there with mode 0600. For a log that already holds signed marks, use
 * loadCheckpointKey: a key generated in place of a missing one cannot verify them.
 */
export function loadOrCreateCheckpointKey(path: string): CheckpointKey {
  return loadCheckpointKey(path) ?? createCheckpointKey(path);
}

/**
 * Loads the checkpoint key (a private Ed25519 JWK); undefined when the file does not exist.
 * A key file others can read is refused: whoever holds the key can re-sign a rewritten log.
 */
export function loadCheckpointKey(path: string): CheckpointKey | undefined {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  if ((mode & 0o077) !== 0) {
    throw new ArbiterError('checkpoint_key_insecure', `checkpoint key ${path} is readable by group or others (chmod 600 it)`);
  }
  return checkpointKeyFromJwk(readCheckpointJwk(path), path);
}

/** The key file's JSON, refused (checkpoint_key_invalid) without quoting it when it is not JSON. */
function readCheckpointJwk(path: string): JsonWebKey {
  const jwk = readPrivateJson(path);
  if (jwk === undefined) throw new ArbiterError('checkpoint_key_invalid', `checkpoint key ${path} is not JSON (an Ed25519 JWK)`);
  return jwk as JsonWebKey;
}

/**
 * The key that checks a log's signatures, from the key file the server signs with or from a
 * copy of it without its private part `d` (a public JWK, which anyone may read); undefined
 * when the file does not exist. A private key file others can read is refused, as the server refuses it.
 */
export function loadCheckpointPublicKey(path: string): CheckpointPublicKey | undefined {
  let jwk: JsonWebKey;
  try {
    jwk = readCheckpointJwk(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  if (isObject(jwk) && jwk.d !== undefined) return loadCheckpointKey(path);
  if (!isObject(jwk) || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
    throw new ArbiterError('checkpoint_key_invalid', `checkpoint key ${path} is not an Ed25519 JWK`);
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' });
  } catch {
    throw new ArbiterError('checkpoint_key_invalid', `checkpoint key ${path} is not an Ed25519 JWK`);
  }
  return { id: keyThumbprint(jwk.x), publicKey };
}

/** RFC 7638 thumbprint of an Ed25519 public key, the key_id stored with each signature. */
function keyThumbprint(x: string): string {
  return createHash('sha256').update(canonicalJson({ crv: 'Ed25519', kty: 'OKP', x })).digest('base64url');
}

/**
 * Generates a checkpoint key at `path` with mode 0600, on disk (its bytes and its directory
 * entry fsynced) before it returns: the log's first commit, fsynced, holds an anchor it signs,
 * and a key a power loss took back would leave a log that neither opens nor verifies.
 */
export function createCheckpointKey(path: string): CheckpointKey {
  const jwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  // Its directory too, as for the log itself: a key_path of its own may name one not made yet.
  makePrivateDirSync(dirname(path));
  // Whole or not at all: a key cut short by a crash would stop every start. The log's state
  // lock keeps other processes out, but should one have made the key meanwhile, it is kept.
  if (!createPrivateFileWhole(path, JSON.stringify(jwk) + '\n')) return loadCheckpointKey(path)!;
  return checkpointKeyFromJwk(jwk, path);
}

function checkpointKeyFromJwk(jwk: JsonWebKey, path: string): CheckpointKey {
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string' || typeof jwk.x !== 'string') {
    throw new ArbiterError('checkpoint_key_invalid', `checkpoint key ${path} is not a private Ed25519 JWK`);
  }
  const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
  return {
    id: keyThumbprint(jwk.x),
    privateKey,
    publicKey: createPublicKey(privateKey),
  };
}
