/**
 * Pull mode, for fleets: each configured source is polled like OPA polls a bundle
 * service (GET of the .tar.gz, `If-None-Match` with the last ETag, 304 keeps the current
 * bundle), and what it serves goes through the same checks and activation as an admin
 * PUT. Replicas polling the same source converge on what it serves. Polls authenticate with the
 * source's credentials and headers (pull-credentials.ts), read at each poll.
 *
 * Polls are jittered so replicas spread out; after a failure the delay doubles up to
 * MAX_BACKOFF_MS (or the interval, if longer), also jittered.
 */
import type { Logger } from 'pino';
import { isHttpsOrLoopbackHttp, type BundlesConfig } from '../config/schema.ts';
import { MAX_TIMER_DELAY_MS } from '../config/timer-delay.ts';
import { ArbiterError, BundleRejectedError } from '../errors.ts';
import { readLimited } from '../read-limited.ts';
import { addressesOf, getFrom, REDIRECT_STATUSES, systemResolver, type HostResolver } from '../net/connection.ts';
import { isThisMachine, reachesThisMachine } from '../net/this-machine.ts';
import { withoutCredentials } from '../shown-url.ts';
import type { BundleLifecycle } from './lifecycle.ts';
import type { SourceCredentials } from './pull-credentials.ts';
import { sha256Hex } from './store.ts';

export type BundleSource = BundlesConfig['sources'][number];

export interface BundlePullerOptions {
  lifecycle: Pick<BundleLifecycle, 'accept'>;
  /** What the source's polls authenticate with (sourceCredentials); none when absent. */
  credentials?: SourceCredentials;
  logger: Logger;
  /** Largest archive accepted from the source (bundles.limits.max_compressed_bytes). */
  maxBytes: number;
  observer?: BundlePullObserver;
  /** How host names are resolved (dns.lookup); a test maps its names to its loopback servers. */
  resolveHost?: HostResolver;
}

export interface BundlePullObserver {
  /** A poll ended: `result` is `ok` (what the source serves is active, or refused for this server's state no more), or the code of what failed. */
  bundlePolled(bundle: string, result: string): void;
}

const MAX_BACKOFF_MS = 10 * 60 * 1000;

/** Checks of one archive a stopping evaluation worker may interrupt in a row before it is refused as the cause. */
export const MAX_INTERRUPTED_CHECKS = 3;

/** Most redirects one poll follows, as Go's HTTP client (OPA's) does. */
const MAX_REDIRECTS = 10;

/**
 * Refusals that depend on this server rather than on the archive: the same archive may pass
 * later (another bundle's roots move, a key is configured, a hand-pushed revision that made it
 * look replayed or conflicting is removed, an evaluation worker no longer stops). Every other
 * BundleRejectedError is the archive's own (its format, signature, manifest, data, a module that
 * does not compile, link or instantiate) and stays refused.
 */
const STATE_DEPENDENT_CHECKS: ReadonlySet<string> = new Set([
  'bundle_roots_overlap',
  'smoke_evaluation',
  // The module's table functions ran past the load deadline: perhaps only because the machine was busy.
  'wasm_timeout',
  // The evaluation worker checking the module stopped twice (crashed, or was stopped) before it
  // answered: the module may have nothing to do with it, unlike a module that cannot be instantiated.
  'wasm_check_interrupted',
  'signature_keys_missing',
  'bundle_replayed',
  'bundle_revision_conflict',
  // Signed ahead of this server's clock: passes once the clock catches up (or is set right).
  'signature_iat_future',
]);

/**
 * Refusals that may be the download's rather than the archive's: a response without
 * Content-Length that is not chunked ends where its connection closes, so one cut short (a proxy,
 * a reset server) arrives as a truncated gzip and nothing else tells it apart. Those bytes stay
 * refused, but the ETag is not remembered for them: the next download may be whole.
 */
const TRANSFER_DEPENDENT_CHECKS: ReadonlySet<string> = new Set(['archive_not_gzip']);

export class BundlePuller {
  readonly source: BundleSource;
  readonly #options: BundlePullerOptions;
  readonly #stop = new AbortController();
  #etag: string | undefined;
  /** The last archive refused for what it is, and why (with the ETag remembered for it). */
  #refused: { digest: string; etag?: string | undefined; error: BundleRejectedError } | undefined;
  /** The archive whose module checks the evaluation worker never finished, and how many times in a row. */
  #interrupted: { digest: string; count: number } | undefined;
  /**
   * The digest of the last archive this source got accepted: served again (by a source
   * without ETags), it is not offered again, so a rollback or removal by hand holds until
   * the source serves another archive or Arbiter restarts, with or without ETags.
   */
  #delivered: string | undefined;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;

  /** The source as logs, errors and the bundle's actor name it: without its credentials. */
  readonly #shownUrl: string;

  constructor(source: BundleSource, options: BundlePullerOptions) {
    this.source = source;
    this.#options = options;
    this.#shownUrl = withoutCredentials(source.url);
  }

  /** Polls now, then on schedule until stopped. */
  start(): void {
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    await this.#polling;
  }

  /** One poll: fetch, and accept what changed. Never throws; failures are logged and back off. */
  async poll(): Promise<void> {
    const { name } = this.source;
    const url = this.#shownUrl;
    try {
      // Read at each poll (a token file rotates); failing, nothing is sent.
      const credentials = (await this.#options.credentials?.headers()) ?? {};
      const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(this.source.timeout_ms)]);
      const { response, answeredBy } = await this.#get(credentials, signal);
      if (response.status === 304) {
        await response.body?.cancel();
        // Not modified since what? Without an ETag sent there is nothing to keep: a server or proxy
        // answering so would otherwise leave the bundle unpulled without a word in the logs.
        if (this.#etag === undefined) throw new ArbiterError('bundle_pull_failed', `${answeredBy} answered 304 Not Modified to a request without If-None-Match`);
        // Still the archive refused: a failed poll, as when a source without ETags serves it again.
        if (this.#etag === this.#refused?.etag) throw this.#refused.error;
        this.#succeeded();
        return;
      }
      if (response.status !== 200) {
        await response.body?.cancel();
        throw new ArbiterError('bundle_pull_failed', `${answeredBy} answered ${response.status}`);
      }
      const etag = response.headers.get('etag') ?? undefined;
      const archive = await readArchive(response, this.#options.maxBytes, answeredBy, signal);
      const digest = sha256Hex(archive);
      // A source without ETags serves the same refused archive again: not worth compiling again.
      if (digest === this.#refused?.digest) throw this.#refused.error;
      if (digest === this.#delivered) {
        this.#etag = etag;
        this.#succeeded();
        return;
      }
      try {
        const result = await this.#options.lifecycle.accept(name, archive, `pull:${url}`, { pulled: true });
        if (result.outcome === 'activated') this.#options.logger.info({ bundle: name, url, revision: result.revision, etag }, 'bundle pulled');
      } catch (error) {
        // An archive refused for what it is stays refused: remember its ETag (unless the download
        // may be at fault) and digest so it is not fetched and checked again. One refused for this
        // server's state (another bundle's roots, a smoke run that timed out under load, a key not
        // configured yet) is fetched and checked again at the next poll.
        if (error instanceof BundleRejectedError && (!STATE_DEPENDENT_CHECKS.has(error.check) || this.#interruptedTooOften(error, digest))) {
          const transfer = TRANSFER_DEPENDENT_CHECKS.has(error.check);
          if (!transfer) this.#etag = etag;
          this.#refused = { digest, etag: transfer ? undefined : etag, error };
        }
        throw error;
      }
      this.#refused = undefined;
      this.#interrupted = undefined;
      this.#delivered = digest;
      this.#etag = etag;
      this.#succeeded();
    } catch (error) {
      if (this.#stop.signal.aborted) return;
      this.#failures += 1;
      const check = error instanceof ArbiterError ? error.code : 'bundle_pull_failed';
      this.#options.observer?.bundlePolled(name, check);
      this.#options.logger.error({ bundle: name, url, check, failures: this.#failures, err: error }, 'bundle pull failed: the active revision keeps serving');
    }
  }

  /**
   * GET of the source, following redirects by hand: fetch would send every configured header to
   * whatever origin a redirect names (it drops Authorization only), and follow one to plain http.
   * Each hop is held to the rule of the source URL (https, or http to a loopback host; no
   * user:password@), and only the source's own origin gets the credentials and headers. Each hop
   * connects only to addresses connectRefusal lets it, resolved once for the check and the
   * connection both. `answeredBy`: the URL that answered, as logs show it.
   */
  async #get(credentials: Record<string, string>, signal: AbortSignal): Promise<{ response: Response; answeredBy: string }> {
    const source = new URL(this.source.url);
    const common = { accept: 'application/gzip, application/octet-stream', ...(this.#etag !== undefined && { 'if-none-match': this.#etag }) };
    let url = source;
    for (let redirects = 0; ; redirects += 1) {
      const redirectedFrom = redirects === 0 ? '' : ` (redirected from ${this.#shownUrl})`;
      const addresses = await addressesOf(url, this.#options.resolveHost ?? systemResolver);
      for (const { address } of addresses) {
        const refused = connectRefusal(source, url, address);
        if (refused !== undefined) throw new ArbiterError('bundle_pull_failed', `${withoutCredentials(url)} resolves to ${address}, which is not connected to: ${refused}${redirectedFrom}`);
      }
      const response = await getFrom(url, addresses, { headers: { ...(url.origin === source.origin && credentials), ...common }, signal });
      const shown = `${withoutCredentials(url)}${redirectedFrom}`;
      if (!REDIRECT_STATUSES.has(response.status)) return { response, answeredBy: shown };
      await response.body?.cancel();
      const location = response.headers.get('location');
      // The Location itself is not shown: it may carry a signature or a password.
      const next = location === null ? null : URL.parse(location, url);
      if (next === null) throw new ArbiterError('bundle_pull_failed', `${shown} answered ${response.status} without a Location that is a URL`);
      if (redirects === MAX_REDIRECTS) throw new ArbiterError('bundle_pull_failed', `${this.#shownUrl} leads through more than ${MAX_REDIRECTS} redirects`);
      const refused = redirectRefusal(source, next);
      if (refused !== undefined) throw new ArbiterError('bundle_pull_failed', `${shown} redirects to ${refused}`);
      url = next;
    }
  }

  /**
   * Whether a check of `digest` the evaluation worker never finished has now happened
   * MAX_INTERRUPTED_CHECKS times in a row: a crash is nothing against a module once, but a module
   * whose check stops the worker every time may be what stops it (each check costs two workers
   * and the decisions in flight on them), so it is refused until the source serves another.
   */
  #interruptedTooOften(error: BundleRejectedError, digest: string): boolean {
    if (error.check !== 'wasm_check_interrupted') return false;
    const count = this.#interrupted?.digest === digest ? this.#interrupted.count + 1 : 1;
    this.#interrupted = { digest, count };
    if (count < MAX_INTERRUPTED_CHECKS) return false;
    this.#options.logger.error(
      { bundle: this.source.name, url: this.#shownUrl, digest, checks: count },
      'bundle refused until its source changes: every check of its module stopped the evaluation worker',
    );
    return true;
  }

  #succeeded(): void {
    this.#failures = 0;
    this.#options.observer?.bundlePolled(this.source.name, 'ok');
  }

  #schedule(delayMs: number): void {
    if (this.#stop.signal.aborted) return;
    this.#timer = setTimeout(() => {
      this.#polling = this.poll().then(() => this.#schedule(this.#nextDelayMs()));
    }, delayMs);
    this.#timer.unref();
  }

  #nextDelayMs(): number {
    const interval = this.source.poll_interval_s * 1000;
    // The jitter may take an interval at the schema's limit past what a timer can wait.
    if (this.#failures === 0) return Math.min(interval * (0.9 + Math.random() * 0.2), MAX_TIMER_DELAY_MS);
    const backoff = Math.min(interval * 2 ** this.#failures, Math.max(MAX_BACKOFF_MS, interval));
    return backoff * (0.5 + Math.random() * 0.5);
  }
}

async function readArchive(response: Response, limit: number, url: string, signal: AbortSignal): Promise<Uint8Array> {
  try {
    const body = await readLimited(response, limit, () => new BundleRejectedError('archive_compressed_too_large', `${url} serves more than ${limit} bytes`));
    return new Uint8Array(body);
  } catch (error) {
    // The connection's own word for it is a bare "aborted".
    if (error instanceof ArbiterError || signal.aborted) throw error;
    throw new ArbiterError('bundle_pull_failed', `${url} broke off its answer before the whole archive arrived`, { cause: error });
  }
}

/**
 * Why a redirect of the bundle source `source` to `next` is not followed (as the rest of the
 * message after "redirects to"), or undefined when it is. A hop is held to the rule of the source
 * URL (https, or plain http to a loopback host; no user:password@), and a remote source may not
 * lead to a loopback host: a bundle server elsewhere would otherwise make Arbiter send requests
 * to services that listen only on this machine.
 */
export function redirectRefusal(source: URL, next: URL): string | undefined {
  if (next.username !== '' || next.password !== '') return 'a URL with user:password@, which is not followed';
  if (!isHttpsOrLoopbackHttp(next)) {
    const where = next.protocol === 'http:' ? withoutCredentials(next) : `a ${next.protocol} URL`;
    return `${where}, which is not followed: https only (plain http to a loopback host), as the source URL`;
  }
  if (reachesThisMachine(next.hostname) && !reachesThisMachine(source.hostname)) {
    return `${withoutCredentials(next)}, which is not followed: a source on another host may not lead to this one`;
  }
  return undefined;
}

/**
 * Why one hop of a poll of `source` may not connect to `address` (one its host name resolves to),
 * or undefined when it may. Plain http goes only to this machine, whatever the name says, so
 * nothing travels in clear text beyond it (nor reaches a link-local metadata service, which
 * speaks http only). A source on another host may not lead to this machine: a bundle server
 * elsewhere would otherwise make Arbiter send requests to services that listen only here, through
 * a name that resolves to loopback. The source's own origin goes wherever its name resolves,
 * loopback included: that name and its DNS are the operator's choice (a sidecar, /etc/hosts).
 */
export function connectRefusal(source: URL, hop: URL, address: string): string | undefined {
  const local = isThisMachine(address);
  if (hop.protocol === 'http:' && !local) return 'plain http only to this machine';
  if (local && hop.origin !== source.origin && !reachesThisMachine(source.hostname)) return 'a source on another host may not lead to this machine';
  return undefined;
}
