import autocannon from 'autocannon';
import { cpuMicros, memoryMiB, type ServerProcess } from './processes.ts';
import type { Target } from './workload.ts';

export interface LoadOptions {
  connections: number;
  durationS: number;
  /** Requests per second over all connections; as fast as possible when absent. */
  overallRate?: number;
}

/** One timed run against one server. Latencies in ms, CPU in µs of the server process per decision. */
export interface RunMeasurement {
  decisions: number;
  decisions_per_s: number;
  latency_ms: { p50: number; p99: number; p99_9: number };
  cpu_us_per_decision: number;
  rss_mib: number;
  peak_rss_mib: number;
  non_2xx: number;
  errors: number;
}

/**
 * Drives one server with keep-alive connections (pipelining 1), cycling through the target's bodies.
 * Latencies are recorded per response at microsecond precision (autocannon's own histogram
 * rounds to whole milliseconds, too coarse for a sub-millisecond server).
 */
export async function measure(server: ServerProcess, target: Target, options: LoadOptions): Promise<RunMeasurement> {
  const { bodies } = target;
  let next = 0;
  const latencies: number[] = [];
  const cpuBefore = cpuMicros(server.pid);
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: server.url,
        connections: options.connections,
        pipelining: 1,
        duration: options.durationS,
        ...(options.overallRate !== undefined && { overallRate: options.overallRate }),
        requests: [
          {
            method: 'POST',
            path: target.path,
            headers: { 'content-type': 'application/json' },
            setupRequest: (request) => ({ ...request, body: bodies[next++ % bodies.length]! }),
          },
        ],
      },
      (error, done) => (error ? reject(error as Error) : resolve(done)),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode === 200) latencies.push(responseTime);
    });
  });
  const cpuUsed = cpuMicros(server.pid) - cpuBefore;
  const memory = memoryMiB(server.pid);
  const decisions = latencies.length;
  latencies.sort((a, b) => a - b);
  return {
    decisions,
    decisions_per_s: decisions / options.durationS,
    latency_ms: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), p99_9: percentile(latencies, 0.999) },
    cpu_us_per_decision: decisions > 0 ? cpuUsed / decisions : NaN,
    rss_mib: memory.rss,
    peak_rss_mib: memory.peak,
    non_2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}

export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  return Number.isInteger(middle) ? (sorted[middle - 1]! + sorted[middle]!) / 2 : sorted[Math.floor(middle)]!;
}
