import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Arbiter } from '../src/server/start.ts';
import { postJson, startTestArbiter } from './support/arbiter.ts';
import { TestIssuer } from './support/issuer.ts';

/**
 * Writes racing decisions on the worker pool. Whatever the interleaving, a decision's input
 * must describe the live data it was evaluated on, and a revocation committed while a decision
 * is evaluated must not be answered with the allow computed before it.
 */
let admins: TestIssuer;
let idp: TestIssuer;
let arbiter: Arbiter;
let adminToken: string;

beforeAll(async () => {
  [admins, idp] = await Promise.all([TestIssuer.create('https://admins.test.example'), TestIssuer.create('https://idp.test.example')]);
  await Promise.all([admins.serve(), idp.serve()]);
  arbiter = await startTestArbiter({
    issuers: [{ issuer: idp.issuer, jwks_uri: idp.jwksUri, audiences: ['https://api.example.com'], algorithms: ['ES256'] }],
    admin: { issuers: [{ issuer: admins.issuer, jwks_uri: admins.jwksUri, audiences: ['arbiter-admin'], algorithms: ['ES256'] }] },
    bundles: { default: 'echo' },
    // One worker, and a short deadline for the spinning decision that holds it. The spin allocates
    // as it goes (about 256 MiB in a second here): a memory ceiling well above that keeps the
    // deadline, not the ceiling, what ends it, however fast the machine.
    engine: { workers: 1, deadline_ms: 1000, max_memory_mb: 2048 },
  });
  adminToken = await admins.sign({ sub: 'ops@example', aud: 'arbiter-admin', scope: 'arbiter.data.write arbiter.revocations.write' });
}, 30_000);

afterAll(async () => {
  await arbiter?.close();
  await Promise.all([admins?.close(), idp?.close()]);
});

it('decides again on a subject revoked while its policy ran: no allow made before the revocation', async () => {
  const token = await idp.sign({ sub: 'user:queued', scope: 'read' });
  const decide = (body: Record<string, unknown>) => postJson(`${arbiter.url}/v1/decide`, { action: 'read', resource: { type: 'doc' }, ...body });
  expect((await decide({ token })).body).toMatchObject({ allow: true });
  // The only worker spins until its deadline; the token's decision is checked for revocations
  // and then waits behind it, so the revocation below lands before its evaluation ends.
  const spinning = decide({ policy: 'spin', context: { spin: true } });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const queued = decide({ token });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const revocation = await fetch(`${arbiter.url}/v1/revocations`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'sub', value: 'user:queued', reason: 'left' }),
  });
  expect(revocation.status).toBe(201);
  expect((await queued).body).toMatchObject({ allow: false, reasons: [{ code: 'echo', revoked: { revoked: true, reason: 'left' } }] });
  expect((await spinning).body).toMatchObject({ reasons: [{ code: 'policy_timeout' }] });
}, 30_000);

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
