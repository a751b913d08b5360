import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, Server, type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, inject, it, vi } from 'vitest';
import { createServer as createHttpServer } from 'node:http';
import { lookup } from 'node:dns/promises';
import { ConfigError } from '../src/errors.ts';
import { readBundleArchive } from '../src/policy/archive.ts';
import { capturingLogger, startTestArbiter, tempDir } from './support/arbiter.ts';
import { build, signingArgs, signingKey, writeBundleSource } from './support/bundle-sources.ts';
import { LOOP_FOREVER, packFiles, prefixExportedFunction } from './support/hostile-archives.ts';
import { whileLocked } from './support/sqlite-lock.ts';

/** A CLI configuration serving the echo bundle, with all its state in `dir`; returns its path. */
function writeCliConfig(dir: string, extraConfig: string[]): string {
  const configFile = join(dir, 'arbiter.yaml');
  writeFileSync(
    configFile,
    [
      'server: {host: 127.0.0.1, port: 0, shutdown_timeout_s: 10}',
      `bundles: {dir: ${JSON.stringify(inject('bundlesDir'))}, default: echo, store: ${JSON.stringify(join(dir, 'store'))}}`,
      `data: {path: ${JSON.stringify(join(dir, 'data.db'))}}`,
      // In `dir` too: the default (.arbiter/decisions.db) is the repository's own, which `npm start` writes.
      ...(extraConfig.some((line) => line.startsWith('decision_log:')) ? [] : [`decision_log: {path: ${JSON.stringify(join(dir, 'decisions.db'))}}`]),
      ...extraConfig,
    ].join('\n'),
  );
  return configFile;
}

/** The real CLI serving the echo bundle, with its JSON log lines collected as they come. */
async function spawnArbiter(extraConfig: string[] = [], env: Record<string, string> = {}): Promise<{ child: ChildProcess; logged: Record<string, any>[]; url: string; dir: string }> {
  const dir = tempDir();
  const configFile = writeCliConfig(dir, extraConfig);
  const child = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const logged: Record<string, any>[] = [];
  const url = await new Promise<string>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, any>;
      logged.push(entry);
      if (entry.msg === 'arbiter listening') resolve(entry.url as string);
    });
  });
  return { child, logged, url, dir };
}

/**
 * SIGTERM under load, against the real CLI process: every request the server accepted is
 * answered (each answered decision is in the server's log), readiness drops, and the
 * process exits 0 within its deadline.
 */
describe('graceful shutdown', () => {
  it('answers every accepted request and exits 0 on SIGTERM', async () => {
    const { child, logged, url: base } = await spawnArbiter();
    const answered = new Set<string>();
    let failedMidRequest = 0;
    let stop = false;
    const client = async () => {
      while (!stop) {
        try {
          const res = await fetch(`${base}/v1/decide`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ action: 'read', resource: { type: 'doc' } }),
          });
          if (res.status !== 200) throw new Error(`status ${res.status}`);
          answered.add(((await res.json()) as { decision_id: string }).decision_id);
        } catch (error) {
          // Refused at connect once the listener is closed: not accepted, so not lost.
          const code = (error as { cause?: { code?: string } }).cause?.code;
          if (code === 'ECONNREFUSED') return;
          if (code !== 'ECONNRESET' && code !== 'UND_ERR_SOCKET') failedMidRequest += 1;
          return;
        }
      }
    };
    const clients = Array.from({ length: 8 }, client);
    // Signal once the server is visibly under load (however slow the machine is).
    while (answered.size < 50) await new Promise((resolve) => setTimeout(resolve, 10));
    child.kill('SIGTERM');
    const [exitCode] = (await once(child, 'exit')) as [number];
    stop = true;
    await Promise.all(clients);

    expect(exitCode).toBe(0);
    expect(failedMidRequest).toBe(0);
    const decided = new Set(logged.filter((l) => l.msg === 'decision').map((l) => l.decision_id as string));
    // Every answer the clients received was decided and logged before the process exited...
    for (const id of answered) expect(decided.has(id)).toBe(true);
    // ...and every decision the server made reached a client (none was dropped on the way out).
    expect([...decided].filter((id) => !answered.has(id))).toEqual([]);
    expect(logged.some((l) => l.msg === 'shutting down')).toBe(true);
  });

  it.each([['SIGTERM', 'SIGINT'], ['SIGTERM', 'SIGTERM']] as NodeJS.Signals[][])(
    'a second signal (%s, then %s) waits for the first shutdown: the request in flight is answered, every record written, exit 0',
    async (first, second) => {
      // relaxed, with records written only at close: a cut-short shutdown loses them all.
      const decisions = join(tempDir(), 'decisions.db');
      const { child, logged, url } = await spawnArbiter([`decision_log: {path: ${JSON.stringify(decisions)}, durability: relaxed, flush_interval_ms: 30000}`]);
      const body = JSON.stringify({ action: 'read', resource: { type: 'doc' } });
      const answered: string[] = [];
      for (let i = 0; i < 10; i++) {
        const res = await fetch(`${url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' }, body });
        answered.push(((await res.json()) as { decision_id: string }).decision_id);
      }
      // A request still arriving while both signals come.
      const socket = connect(Number(new URL(url).port), '127.0.0.1');
      await once(socket, 'connect');
      let response = '';
      socket.on('data', (chunk) => (response += chunk));
      socket.write(`POST /v1/decide HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body.slice(0, 5)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      child.kill(first);
      await new Promise((resolve) => setTimeout(resolve, 50));
      child.kill(second);
      await new Promise((resolve) => setTimeout(resolve, 300));
      socket.write(body.slice(5));
      await once(socket, 'close');
      expect(await exited).toEqual([0, null]);
      expect(response).toMatch(/^HTTP\/1\.1 200/);
      answered.push(/"decision_id":"([^"]+)"/.exec(response)![1]!);
      const db = new DatabaseSync(decisions, { readOnly: true });
      const recorded = new Set((db.prepare('SELECT decision_id FROM decisions').all() as { decision_id: string }[]).map((row) => row.decision_id));
      db.close();
      expect(answered.filter((id) => !recorded.has(id))).toEqual([]);
      expect(logged.filter((line) => line.level >= 50)).toEqual([]);
      expect(logged.some((line) => line.msg?.startsWith('already shutting down'))).toBe(true);
    },
  );

  it('SIGHUP (a closed terminal, a kill -HUP) shuts down like SIGTERM: every record written, exit 0, not killed by the signal', async () => {
    // relaxed, with records written only at close: dying of the signal would lose them all.
    const decisions = join(tempDir(), 'decisions.db');
    const { child, logged, url } = await spawnArbiter([`decision_log: {path: ${JSON.stringify(decisions)}, durability: relaxed, flush_interval_ms: 30000}`]);
    const answered: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${url}/v1/decide`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ action: 'read', resource: { type: 'doc' } }),
      });
      answered.push(((await res.json()) as { decision_id: string }).decision_id);
    }
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    child.kill('SIGHUP');
    expect(await exited).toEqual([0, null]);
    const db = new DatabaseSync(decisions, { readOnly: true });
    const recorded = new Set((db.prepare('SELECT decision_id FROM decisions').all() as { decision_id: string }[]).map((row) => row.decision_id));
    db.close();
    expect(answered.filter((id) => !recorded.has(id))).toEqual([]);
    expect(logged.find((line) => line.msg === 'shutting down')).toMatchObject({ signal: 'SIGHUP' });
  });
});

describe('a data store that cannot be written', () => {
  it('keeps serving when pruning expired revocations fails, and logs why', async () => {
    const { child, logged, url, dir } = await spawnArbiter([], { ARBITER_DATA__REVOCATION_PRUNE_INTERVAL_S: '1' });
    let exited: number | null = null;
    child.on('exit', (code) => (exited = code));
    // Another process holding the write lock past busy_timeout (5 s), as a full disk would fail it too.
    await whileLocked(join(dir, 'data.db'), async () => {
      const failed = () => logged.some((line) => line.msg === 'pruning expired revocations failed');
      await expect.poll(() => exited !== null || failed(), { timeout: 15_000, interval: 200 }).toBe(true);
      expect(exited).toBeNull();
      expect(failed()).toBe(true);
    });
    expect(exited).toBeNull();
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const exit = once(child, 'exit') as Promise<[number | null]>;
    child.kill('SIGTERM');
    expect((await exit)[0]).toBe(0);
  });
});

describe('a decision log transport that fails', () => {
  it('is logged and stops shipping, while the server keeps deciding (it does not take the process down)', async () => {
    const dir = tempDir();
    const target = join(dir, 'failing-transport.mjs');
    writeFileSync(target, "import { Writable } from 'node:stream';\nexport default () => new Writable({ write(chunk, encoding, callback) { callback(new Error('log shipper down')); } });\n");
    const { child, logged, url } = await spawnArbiter([`decision_log: {path: ${JSON.stringify(join(dir, 'shipped-decisions.db'))}, transport: {target: ${JSON.stringify(target)}}}`]);
    let exited: number | null = null;
    child.on('exit', (code) => (exited = code));
    try {
      const decide = () => fetch(`${url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"action": "read", "resource": {"type": "doc"}}' });
      expect((await decide()).status).toBe(200);
      await expect.poll(() => exited !== null || logged.some((line) => line.msg === 'decision log transport failed: committed records are no longer shipped'), { timeout: 10_000 }).toBe(true);
      expect(exited).toBeNull();
      expect((await decide()).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(exited).toBeNull();
      expect(logged.filter((line) => line.msg?.startsWith('decision log transport failed'))).toHaveLength(1);
    } finally {
      if (exited === null) {
        const exit = once(child, 'exit');
        child.kill('SIGTERM');
        await exit;
      }
    }
  });

  it('stops start-up naming decision_log.transport.target when its module cannot be loaded', async () => {
    const dir = tempDir();
    const configFile = writeCliConfig(dir, [`decision_log: {path: ${JSON.stringify(join(dir, 'decisions.db'))}, transport: {target: ${JSON.stringify(join(dir, 'no-such-transport.mjs'))}}}`]);
    const child = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    expect({ code, stderr }).toMatchObject({ code: 2, stderr: expect.stringContaining('decision_log.transport.target') });
  });
});

/** A pino transport module whose build never finishes (a shipper waiting for a collector that is down). */
function hangingTransport(dir: string): string {
  const target = join(dir, 'hanging-transport.mjs');
  writeFileSync(target, 'export default () => new Promise(() => {});\n');
  return target;
}

describe('a decision log transport that never becomes ready', () => {
  it('stops start-up after decision_log.transport.ready_timeout_s, naming the key, and leaves no thread behind', async () => {
    const dir = tempDir();
    const before = workerPorts();
    const failure = await startTestArbiter({
      decision_log: { path: join(dir, 'decisions.db'), transport: { target: hangingTransport(dir), ready_timeout_s: 0.5 } },
    }).then(() => undefined, (error: unknown) => error);
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as ConfigError).issues).toEqual([{ path: 'decision_log.transport.target', message: expect.stringContaining('did not become ready within 0.5 s') }]);
    await expect.poll(workerPorts, { timeout: 5000 }).toBe(before);
  });

  it('honours a ready_timeout_s that is not a whole number of milliseconds (no RangeError from the timer)', async () => {
    const dir = tempDir();
    const failure = await startTestArbiter({
      decision_log: { path: join(dir, 'decisions.db'), transport: { target: hangingTransport(dir), ready_timeout_s: 0.2505 } },
    }).then(() => undefined, (error: unknown) => error);
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as ConfigError).issues).toEqual([{ path: 'decision_log.transport.target', message: expect.stringContaining('did not become ready within 0.2505 s') }]);
  });

  it('lets SIGTERM end a start-up that waits for it: exit 0 promptly, with a log line, never listening', async () => {
    const dir = tempDir();
    const configFile = writeCliConfig(dir, [`decision_log: {path: ${JSON.stringify(join(dir, 'decisions.db'))}, transport: {target: ${JSON.stringify(hangingTransport(dir))}, ready_timeout_s: 120}}`]);
    const child = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    const logged: Record<string, any>[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => logged.push(JSON.parse(line) as Record<string, any>));
    const exit = once(child, 'exit') as Promise<[number | null, string | null]>;
    // Start-up logs about signatures just before it opens the decision log and waits for the transport.
    await expect.poll(() => logged.some((line) => String(line.msg).startsWith('bundle signatures')), { timeout: 20_000 }).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.kill('SIGTERM');
    const [code, signal] = await exit;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(logged.find((line) => line.msg === 'signal during start-up: stopping before serving')).toMatchObject({ signal: 'SIGTERM' });
    expect(logged.some((line) => line.msg === 'arbiter listening')).toBe(false);
  });
});

describe('a signal while the port is being opened', () => {
  it('stops start-up all the same: the port closed again, nothing left running, the start rejected', async () => {
    // server.host a name: the port opens after its lookup, a turn of the event loop in which a
    // SIGTERM's handler runs. Aborted as that handler would, once the port is being opened.
    const startUp = new AbortController();
    const opening: Server[] = [];
    const listen = Server.prototype.listen;
    const spy = vi.spyOn(Server.prototype, 'listen').mockImplementation(function (this: Server, ...args: unknown[]) {
      opening.push(this);
      startUp.abort();
      return listen.apply(this, args as Parameters<typeof listen>);
    });
    const before = workerPorts();
    let failure: unknown;
    try {
      failure = await startTestArbiter({}, { signal: startUp.signal }).then(
        async (started) => void (await started.close()),
        (error: unknown) => error,
      );
    } finally {
      spy.mockRestore();
    }
    expect(failure).toMatchObject({ name: 'AbortError' });
    expect(opening).toHaveLength(1);
    expect(opening[0]!.listening).toBe(false);
    await expect.poll(workerPorts, { timeout: 5000 }).toBe(before);
  });
});

describe('a signal while start-up restores bundles', () => {
  it('stops start-up at once, not when the check of a slow embedded bundle ends (up to engine.load_deadline_ms)', async () => {
    // An embedded module whose entrypoint table never returns: its check at restore runs until load_deadline_ms.
    const dir = tempDir();
    const bundlesDir = join(dir, 'bundles');
    mkdirSync(bundlesDir);
    const files = await readBundleArchive(new Uint8Array(build(writeBundleSource(dir, 'tables'), join(dir, 'tables.tar.gz'), 'tables-1')));
    writeFileSync(join(bundlesDir, 'tables.tar.gz'), packFiles(new Map(files).set('policy.wasm', prefixExportedFunction(files.get('policy.wasm')!, 'entrypoints', LOOP_FOREVER))));
    const { logger, lines } = capturingLogger();
    const before = workerPorts();
    const startUp = new AbortController();
    const starting = startTestArbiter(
      { engine: { workers: 1, load_deadline_ms: 30_000 }, bundles: { dir: bundlesDir, default: 'tables' } },
      { signal: startUp.signal, logger },
    ).then(async (started) => void (await started.close()), (error: unknown) => error);
    // Let the restore reach the check on the worker.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const aborted = performance.now();
    startUp.abort();
    const failure = await starting;
    expect(failure).toMatchObject({ name: 'AbortError' });
    expect(performance.now() - aborted).toBeLessThan(3000);
    await expect.poll(workerPorts, { timeout: 5000 }).toBe(before);
    // Stopped, not refused: no bundle is reported rejected for the interruption.
    expect(lines.filter((line) => line.msg === 'embedded bundle rejected')).toEqual([]);
  }, 60_000);
});

/** Worker threads (evaluation pool, decision-log writer) hold a MessagePort each until closed. */
const workerPorts = () => process.getActiveResourcesInfo().filter((kind) => kind === 'MessagePort').length;

/** A bundle server on loopback answering every request with `archive`; `pulled` once it has. */
async function serveArchive(archive: Uint8Array, file: string): Promise<{ url: string; pulled: Promise<void>; close: () => void }> {
  let served!: () => void;
  const pulled = new Promise<void>((resolve) => (served = resolve));
  const server = createHttpServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/gzip' }).end(archive);
    served();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/${file}`, pulled, close: () => server.close() };
}

describe('a shutdown while a pulled bundle is being checked', () => {
  it('stops listening at once and ends within server.shutdown_timeout_s, not when the check ends (up to engine.load_deadline_ms)', async () => {
    // A module whose entrypoint table never returns: its check runs until load_deadline_ms.
    const dir = tempDir();
    const files = await readBundleArchive(new Uint8Array(build(writeBundleSource(dir, 'tables'), join(dir, 'tables.tar.gz'), 'tables-1')));
    const archive = packFiles(new Map(files).set('policy.wasm', prefixExportedFunction(files.get('policy.wasm')!, 'entrypoints', LOOP_FOREVER)));
    const source = await serveArchive(archive, 'tables.tar.gz');
    const before = workerPorts();
    try {
      const arbiter = await startTestArbiter({
        server: { shutdown_timeout_s: 1 },
        engine: { workers: 1, load_deadline_ms: 30_000 },
        bundles: { sources: [{ name: 'tables', url: source.url }] },
      });
      await source.pulled;
      // Let the archive arrive and its check start on the worker.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const started = performance.now();
      const closed = arbiter.close();
      // The listener closes with the drain, not once the check is over.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const refused = await fetch(`${arbiter.url}/healthz`).then(() => 'answered', (error: { cause?: { code?: string } }) => error.cause?.code);
      await closed;
      expect(refused).toBe('ECONNREFUSED');
      expect(performance.now() - started).toBeLessThan(5000);
      await expect.poll(workerPorts, { timeout: 5000 }).toBe(before);
    } finally {
      source.close();
    }
  }, 60_000);
});

describe('a shutdown while a pulled signed bundle\'s large data.json is hashed', () => {
  it('ends within server.shutdown_timeout_s, not when the hashing thread is done', async () => {
    // A signature replayed beside 16 MiB of small numbers: the thread hashing data.json for it
    // (as OPA does, value by value) runs for many seconds.
    const dir = tempDir();
    const key = signingKey(dir);
    const files = await readBundleArchive(new Uint8Array(build(writeBundleSource(dir, 'big'), join(dir, 'big.tar.gz'), 'big-1', signingArgs(dir, key, 1000))));
    const archive = packFiles(new Map(files).set('data.json', new Uint8Array(Buffer.from(`{"big": {"n": [${'1,'.repeat(8 * 1024 * 1024)}1]}}`))));
    const source = await serveArchive(archive, 'big.tar.gz');
    const before = workerPorts();
    try {
      const arbiter = await startTestArbiter({
        server: { shutdown_timeout_s: 1 },
        bundles: {
          require_signatures: true,
          signing: { keys: { default: { key: key.publicPem, algorithm: 'RS256' } }, scope: 'write' },
          sources: [{ name: 'big', url: source.url }],
        },
      });
      await source.pulled;
      // Let the archive arrive and its hashing start.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const started = performance.now();
      await arbiter.close();
      expect(performance.now() - started).toBeLessThan(5000);
      await expect.poll(workerPorts, { timeout: 5000 }).toBe(before);
    } finally {
      source.close();
    }
  }, 60_000);
});

describe('a close that fails', () => {
  it('still ends the evaluation workers and lets the state files go when the decision log cannot close', async () => {
    const before = workerPorts();
    const path = join(tempDir(), 'decisions.db');
    const arbiter = await startTestArbiter({ decision_log: { path, busy_timeout_ms: 50 } });
    const decided = await fetch(`${arbiter.url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: { name: 'read' } }) });
    expect(decided.status).toBeLessThan(500);
    // Its final checkpoint cannot be signed while another process holds the write lock.
    await whileLocked(path, () => expect(arbiter.close()).rejects.toMatchObject({ code: 'decision_log_write_failed' }));
    await expect.poll(workerPorts, { timeout: 5000 }).toBe(before);
    // The state locks are gone: a new server takes the same files.
    const next = await startTestArbiter({ decision_log: { path } });
    await next.close();
  });
});

describe('a start that fails', () => {

  it('names the key of a file it cannot create or load, and leaves nothing running', async () => {
    const dir = tempDir();
    const aFile = join(dir, 'a-file');
    writeFileSync(aFile, 'not a directory');
    const cases: [Record<string, unknown>, string][] = [
      [{ decision_log: { path: join(aFile, 'decisions.db') } }, 'decision_log.path'],
      [{ decision_log: { path: join(dir, 'd1.db'), checkpoint: { key_path: join(aFile, 'key.jwk') } } }, 'decision_log.checkpoint.key_path'],
      [{ decision_log: { path: join(dir, 'd2.db'), transport: { target: 'no-such-transport-module' } } }, 'decision_log.transport.target'],
      [{ dev_issuer: { enabled: true, key_file: join(aFile, 'dev.jwk.json') } }, 'dev_issuer.key_file'],
      [{ data: { path: join(aFile, 'data.db') } }, 'data.path'],
      [{ bundles: { store: join(aFile, 'bundles') } }, 'bundles.store'],
    ];
    const before = workerPorts();
    for (const [config, key] of cases) {
      const failure = await startTestArbiter(config).then(() => undefined, (error: unknown) => error);
      expect(failure, key).toBeInstanceOf(ConfigError);
      expect((failure as ConfigError).issues.map((issue) => issue.path), key).toEqual([key]);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(workerPorts()).toBe(before);
  });

  it('refuses the data store, decision log or bundle store of a running server, naming the key, until that server is gone', async () => {
    // Another process: the running server's in-memory state (revocations, live data, the log's
    // chain head) would never see this one's writes, and its next commit would fail. Two on one
    // bundle store overwrite each other's index, and each deletes the archives the other's
    // index names but its own does not (retention).
    const { child, url, dir } = await spawnArbiter();
    const links = tempDir();
    const storeLink = join(links, 'store-link');
    symlinkSync(join(dir, 'store'), storeLink);
    const dirLink = join(links, 'state-link');
    symlinkSync(dir, dirLink);
    const shared: [Record<string, unknown>, string][] = [
      [{ data: { path: join(dir, 'data.db') } }, 'data.path'],
      [{ decision_log: { path: join(dir, 'decisions.db') } }, 'decision_log.path'],
      [{ bundles: { store: join(dir, 'store') } }, 'bundles.store'],
      // The same directory spelled with a trailing slash is the same store.
      [{ bundles: { store: `${join(dir, 'store')}/` } }, 'bundles.store'],
      // So are the same files reached through a symlink, to them or to their directory.
      [{ bundles: { store: storeLink } }, 'bundles.store'],
      [{ data: { path: join(dirLink, 'data.db') } }, 'data.path'],
      [{ decision_log: { path: join(dirLink, 'decisions.db') } }, 'decision_log.path'],
    ];
    for (const [config, key] of shared) {
      const failure = await startTestArbiter(config).then(async (started) => void (await started.close()), (error: unknown) => error);
      expect(failure, `${key} ${JSON.stringify(config)}`).toBeInstanceOf(ConfigError);
      expect((failure as ConfigError).issues, key).toEqual([{ path: key, message: expect.stringContaining('another Arbiter process') }]);
    }
    // The running server still decides and records.
    const answer = await fetch(`${url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'read', resource: { type: 'doc' } }) });
    expect(await answer.json()).toMatchObject({ allow: true });
    // Killed without a chance to clean up, it holds nothing: the next server starts on the same files.
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    const files = { data: { path: join(dir, 'data.db') }, decision_log: { path: join(dir, 'decisions.db') }, bundles: { store: join(dir, 'store') } };
    const next = await startTestArbiter(files);
    await next.close();
    // And one that closed frees them for the next start in the same process.
    const again = await startTestArbiter(files);
    await again.close();
  });

  it('tells the CLI user the key, without a stack trace, and exits 2', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'a-file'), '');
    const configFile = writeCliConfig(dir, [`decision_log: {path: ${JSON.stringify(join(dir, 'a-file', 'decisions.db'))}}`]);
    const run = spawnSync(process.execPath, ['src/cli/main.ts', 'serve', '--config', configFile], { encoding: 'utf8', timeout: 20_000 });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('decision_log.path');
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });

  it('names server.host when no interface of this machine has that address, or the name resolves to none', async () => {
    // It said `cannot listen on 192.0.2.1:8181 (EADDRNOTAVAIL)`, naming no key, and exited 1 as for a fault.
    const gateway = { authentication: 'api_key', api_keys: [{ id: 'edge', sha256: 'ab'.repeat(32) }] };
    for (const host of ['192.0.2.1', 'no-such-host.invalid']) {
      const failure = await startTestArbiter({ server: { host }, gateway }).then(async (started) => void (await started.close()), (error: unknown) => error);
      expect(failure, host).toBeInstanceOf(ConfigError);
      expect((failure as ConfigError).issues, host).toEqual([{ path: 'server.host', message: expect.stringContaining(host) }]);
    }
  });

  it('names server.diagnostic.port when the main listener holds it under another spelling of its host, not another process', async () => {
    // localhost and the address it resolves to are two hosts to the configuration check, one
    // address to listen(): start-up said "another process uses it", and exited 1 as for a fault.
    const { address } = await lookup('localhost');
    const free = createServer();
    await new Promise<void>((resolve) => free.listen(0, address, resolve));
    const { port } = free.address() as AddressInfo;
    await new Promise((resolve) => free.close(resolve));
    const failure = await startTestArbiter({ server: { host: 'localhost', port, diagnostic: { host: address, port } } }).then(
      async (started) => void (await started.close()),
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as ConfigError).issues).toEqual([{ path: 'server.diagnostic.port', message: expect.stringMatching(/server\.port's listener .*holds it/) }]);
    expect((failure as ConfigError).issues[0]!.message).not.toContain('another process');
  });

  it('leaves no worker thread, database or timer behind (the port is taken)', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const before = workerPorts();
    try {
      const failure = await startTestArbiter({ server: { port: (taken.address() as AddressInfo).port } }).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toMatchObject({ code: 'listen_failed' });
      // Worker threads (evaluation pool, decision-log writer) hold a MessagePort each until closed.
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(workerPorts()).toBe(before);
    } finally {
      taken.close();
    }
  });
});
