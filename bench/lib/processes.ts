import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** One server under test, running as its own process so its CPU and memory can be read from /proc. */
export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly url: string;
  /** The command line, to reproduce a failed start by hand. */
  readonly command: string;
  stop(): Promise<void>;
}

const CLOCK_TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

/** CPU time the process (all its threads) has used so far, in microseconds. */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name, which may itself contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
  return (ticks / CLOCK_TICKS_PER_S) * 1e6;
}

/** Resident memory now and its peak over the process's life (VmRSS, VmHWM), in MiB. */
export function memoryMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  port: number;
  readyPath: string;
  /** Which stream carries the decision log: it goes to /dev/null, the other is kept for diagnostics. */
  decisionLogStream: 'stdout' | 'stderr';
}

/**
 * Starts a server with its decision log discarded (so neither system pays for a consumer)
 * and waits until it answers its readiness path.
 */
export async function startServer(options: SpawnOptions): Promise<ServerProcess> {
  const { name, command, args, port, readyPath, decisionLogStream } = options;
  const child = spawn(command, args, {
    stdio: ['ignore', decisionLogStream === 'stdout' ? 'ignore' : 'pipe', decisionLogStream === 'stderr' ? 'ignore' : 'pipe'],
  });
  let diagnostics = '';
  const keep = (chunk: Buffer) => (diagnostics = (diagnostics + chunk.toString()).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const commandLine = [command, ...args].join(' ');
  try {
    await waitReady(child, `${url}${readyPath}`);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${name} did not start: ${(error as Error).message}\n  command: ${commandLine}\n${diagnostics}`);
  }
  return { name, pid: child.pid!, url, command: commandLine, stop: () => stop(child) };
}

async function waitReady(child: ChildProcess, url: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode}`);
    try {
      const response = await fetch(url);
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`not ready at ${url} after 30 s`);
}

/** SIGTERM (so a --cpu-prof profile is written), then SIGKILL if it lingers. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}
