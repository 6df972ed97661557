import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { ForgeError } from '../errors.ts';

/**
 * Seals the kernel's confidential records (run snapshots, audit entries, dead letters) before they go into Neo4j.
 * Overlays read the same graph through `db_read`, and Community Edition has no access control by label: so what is
 * confidential is stored as AES-256-GCM ciphertext, bound to its record (its label and id are the associated data, so
 * a sealed value moved to another record does not open), and readable only with the kernel's key.
 */
const PREFIX = 'fk1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A sealed record does not open: corrupted, moved, or sealed with another key. */
export class SealedRecordError extends ForgeError {
  constructor(context: string) {
    super('STORE_CORRUPT', `The sealed kernel record ${context} does not open with this kernel's key: it was changed, moved, or written by a kernel with another secret (set the same store secret on every process).`, {
      details: { record: context },
    });
  }
}

export class RecordSeal {
  readonly #key: Buffer;

  /** A seal with a key derived from `secret` (any string; every process of a deployment must use the same). */
  constructor(secret: string) {
    this.#key = Buffer.from(hkdfSync('sha256', secret, 'forge-kernel/record-seal', 'aes-256-gcm', 32));
  }

  /** Ciphertext for `text`, bound to `context` (e.g. `PipelineRunSnapshot:run-1`). */
  seal(text: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  /**
   * The text sealed in `value` for `context`; {@link SealedRecordError} if it does not open. A value without the seal's
   * prefix is a record written before records were sealed, and is returned as it is.
   */
  open(value: unknown, context: string): string {
    const text = String(value);
    if (!text.startsWith(PREFIX)) return text;
    const raw = Buffer.from(text.slice(PREFIX.length), 'base64');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new SealedRecordError(context);
    }
  }
}
