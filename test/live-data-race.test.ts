import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * Writes racing decisions on the worker pool: whatever the interleaving, a decision's input
 * must describe the live data it was evaluated on (the echo bundle returns both).
 */
let admins: TestIssuer;
let arbiter: Arbiter;
let adminToken: string;

beforeAll(async () => {
  admins = await TestIssuer.create('https://admins.test.example');
  await admins.serve();
  arbiter = await startTestArbiter({
    admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    bundles: { default: 'echo' },
  });
  adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.data.write' });
}, 30_000);

afterAll(async () => {
  await arbiter?.close();
  await admins?.close();
});

it('gives each decision the data_status of the live data version it was evaluated on', async () => {
  let stop = false;
  const writer = async () => {
    for (let i = 0; !stop; i++) {
      const source = `feed-${i}`;
      const response = await fetch(`${arbiter.url}/v1/data/pair`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', 'arbiter-data-source': source },
        body: JSON.stringify({ source }),
      });
      expect(response.status).toBe(200);
    }
  };
  const seen: { version: number; data: string | undefined; status: string | undefined }[] = [];
  const decider = async () => {
    while (!stop) {
      const { body } = await postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' } });
      const reason = body!.reasons[0] as { pair: { source?: string } | null; data_status: { pair?: { source?: string } } };
      seen.push({ version: body!.data_version as number, data: reason.pair?.source, status: reason.data_status.pair?.source });
    }
  };
  setTimeout(() => (stop = true), 3000);
  await Promise.all([writer(), ...Array.from({ length: 24 }, decider)]);
  const written = seen.filter((decision) => decision.data !== undefined);
  // Enough decisions overlapped writes for the check to mean something.
  expect(new Set(written.map((decision) => decision.version)).size).toBeGreaterThan(10);
  expect(written.filter((decision) => decision.data !== decision.status)).toEqual([]);
}, 20_000);
