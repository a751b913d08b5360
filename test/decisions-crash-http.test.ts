import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tempDir } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * kill -9 of the real CLI server under load, in strict durability: every decision_id a
 * client received is in the decision log after a restart, and the chain verifies.
 */
let admins: TestIssuer;
let configFile: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  const dir = tempDir('arbiter-decisions-crash-');
  configFile = join(dir, 'arbiter.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      mode: 'development',
      server: { host: '127.0.0.1', port: 0 },
      bundles: { dir: inject('bundlesDir'), default: 'echo', store: join(dir, 'store') },
      data: { path: join(dir, 'data.db') },
      decision_log: { path: join(dir, 'decisions.db'), durability: 'strict' },
      admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    }),
  );
});

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await admins?.close();
});

/** Starts `arbiter serve` and resolves with its URL once it logs that it listens. */
async function serve(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout! });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`arbiter serve exited with ${code}`)));
    lines.on('line', (line) => {
      const entry = JSON.parse(line) as { msg?: string; url?: string };
      if (entry.msg === 'arbiter listening') resolve(entry.url!);
    });
  });
  return { child, url };
}

describe('decision log durability', () => {
  it('keeps every returned decision_id across kill -9 under load (strict)', async () => {
    const { child, url } = await serve();
    const returned: string[] = [];
    let stop = false;
    const client = async () => {
      while (!stop) {
        try {
          const res = await fetch(`${url}/v1/decide`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ action: 'read', resource: { type: 'doc' } }),
          });
          const body = (await res.json()) as { decision_id: string; reasons: { code: string }[] };
          // A strict decision is answered only once recorded; audit_unavailable ones never were.
          if (body.reasons[0]?.code !== 'audit_unavailable') returned.push(body.decision_id);
        } catch {
          return; // the server is gone: anything unanswered was never returned
        }
      }
    };
    const clients = Array.from({ length: 8 }, client);
    while (returned.length < 300) await new Promise((resolve) => setTimeout(resolve, 5));
    child.kill('SIGKILL');
    await once(child, 'exit');
    stop = true;
    await Promise.all(clients);
    expect(returned.length).toBeGreaterThanOrEqual(300);

    const restarted = await serve();
    try {
      const token = await admins.sign({ sub: 'auditor@example', aud: 'arbiter-admin', scope: 'arbiter.decisions.read' });
      const stored = new Set<string>();
      let cursor: string | null = null;
      do {
        const query = new URLSearchParams({ limit: '1000', ...(cursor !== null && { cursor }) });
        const res = await fetch(`${restarted.url}/v1/decisions?${query}`, { headers: { authorization: `Bearer ${token}` } });
        expect(res.status).toBe(200);
        const page = (await res.json()) as { decisions: { decision_id: string }[]; next_cursor: string | null };
        for (const decision of page.decisions) stored.add(decision.decision_id);
        cursor = page.next_cursor;
      } while (cursor !== null);
      expect(returned.filter((id) => !stored.has(id))).toEqual([]);
      const verify = await fetch(`${restarted.url}/v1/decisions/verify`, { headers: { authorization: `Bearer ${token}` } });
      expect(await verify.json()).toMatchObject({ ok: true });
    } finally {
      restarted.child.kill('SIGTERM');
      await once(restarted.child, 'exit');
    }
  });
});
