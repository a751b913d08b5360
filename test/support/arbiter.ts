import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { inject } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { startArbiter, type Arbiter, type StartOptions } from '../../src/server/start.ts';

/** A fresh directory for one test's state (SQLite files, keys), inside the run's scratch directory. */
export function tempDir(prefix = 'arbiter-test-'): string {
  return mkdtempSync(join(inject('tempRoot'), prefix));
}

/**
 * Starts the real server on an ephemeral loopback port with a config built from `raw`.
 * State goes to fresh temporary directories unless `raw.data.path` / `raw.bundles.store` name them (restart tests).
 */
export async function startTestArbiter(raw: Record<string, unknown> = {}, options: Pick<StartOptions, 'logger' | 'signal' | 'resolveHost'> = {}): Promise<Arbiter> {
  const config = parseConfig({
    mode: 'development',
    ...raw,
    server: { host: '127.0.0.1', port: 0, ...(raw.server as object) },
    bundles: { dir: inject('bundlesDir'), default: 'simple', store: join(tempDir(), 'bundles'), ...(raw.bundles as object) },
    data: { path: join(tempDir(), 'data.db'), ...(raw.data as object) },
    decision_log: { path: join(tempDir(), 'decisions.db'), ...(raw.decision_log as object) },
    // Two test files share two cores with their servers' workers: a scheduling stall must not
    // read as a runaway policy. The deadline itself is tested with its own setting.
    engine: { deadline_ms: 5000, ...(raw.engine as object) },
  });
  return startArbiter(config, { ...options, logger: options.logger ?? pino({ level: 'silent' }) });
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}

/**
 * An admin API call with a bearer token: a Uint8Array body goes as a bundle archive
 * (application/gzip), any other as JSON. The answer's body is parsed when there is one.
 */
export async function adminCall(url: string, token: string, method: string, path: string, body?: Uint8Array | object) {
  const raw = body instanceof Uint8Array;
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': raw ? 'application/gzip' : 'application/json' }) },
    ...(body !== undefined && { body: raw ? new Uint8Array(body) : JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, contentType: response.headers.get('content-type'), body: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}

/** A pino logger that keeps every line it writes, parsed, for assertions on logs. */
export function capturingLogger(): { logger: Logger; lines: Record<string, any>[] } {
  const lines: Record<string, any>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, any>) });
  return { logger, lines };
}
