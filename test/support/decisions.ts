import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newDecisionId } from '../../src/decisions/record.ts';
import type { DecisionRecord } from '../../src/decisions/record.ts';

export interface DecisionShape {
  timestamp?: number;
  caller?: string | null;
  endpoint?: string;
  iss?: string;
  sub?: string;
  client_id?: string;
  action?: string;
  resource_type?: string;
  resource_id?: string;
  allow?: boolean;
  reasons?: string[];
  bundle?: string;
  revision?: string;
  context?: Record<string, unknown>;
}

/** A decision as the decide path would log it, with the indexed fields chosen by the test. */
export function decision(shape: DecisionShape = {}): DecisionRecord {
  const allow = shape.allow ?? true;
  return {
    decision_id: newDecisionId(),
    timestamp: shape.timestamp ?? Date.now(),
    caller: shape.caller === undefined ? 'gateway-a' : shape.caller,
    endpoint: shape.endpoint ?? '/v1/decide',
    bundle: shape.bundle ?? 'main',
    revision: shape.revision ?? 'rev-1',
    input: {
      subject: { iss: shape.iss ?? 'https://idp.test', sub: shape.sub ?? 'alice', client_id: shape.client_id ?? 'web' },
      action: { name: shape.action ?? 'read' },
      resource: { type: shape.resource_type ?? 'document', id: shape.resource_id ?? 'doc-1' },
      context: shape.context ?? { client_ip: '192.0.2.7' },
    },
    claim_names: ['iss', 'sub', 'scope'],
    result: {
      allow,
      reasons: (shape.reasons ?? [allow ? 'granted' : 'scope_missing']).map((code) => ({ code, detail: `because ${code}` })),
      obligations: [],
    },
    latency_us: 120,
  };
}

/** A fresh directory per test, removed afterwards by the returned cleanup. */
export function tempDir(): { dir: string; path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'arbiter-decisions-'));
  return { dir, path: join(dir, 'decisions.db'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Damages the reason codes' index of the log at `path` as only an edit of the file can: rebuilt
 * in descending order, then declared ascending again. Every entry is still there (a scan finds
 * them all, each under its set) but a lookup by code searches the wrong way.
 */
export function corruptReasonCodesIndex(path: string): void {
  const db = new DatabaseSync(path, { defensive: false });
  const { sql } = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'reason_set_codes'").get() as { sql: string };
  db.exec(`ALTER TABLE reason_set_codes RENAME TO old_codes;
    CREATE TABLE reason_set_codes (code TEXT NOT NULL, reason_set INTEGER NOT NULL, PRIMARY KEY (code DESC, reason_set)) WITHOUT ROWID;
    INSERT INTO reason_set_codes SELECT * FROM old_codes; DROP TABLE old_codes;`);
  db.exec('PRAGMA writable_schema = ON');
  db.prepare("UPDATE sqlite_master SET sql = ? WHERE name = 'reason_set_codes'").run(sql);
  db.exec('PRAGMA writable_schema = OFF');
  db.close();
}
