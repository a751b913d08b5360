import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { opaPath } from '../../src/toolchain/opa.ts';

const PACKAGES = ['hono', '@hono/node-server', 'jose', '@open-policy-agent/opa-wasm', 'pino', 'autocannon'];

// Read when the benchmark script starts (every script imports this module before doing any
// work): read when the report is written, after minutes of the benchmark's own load on the
// servers and the load generator, it measured the benchmark rather than other work on the machine.
const LOAD_AVERAGE_AT_START = loadavg()[0]!;

/** What the figures were measured on: they mean little without it. */
export function machineInfo() {
  const cores = cpus();
  return {
    cpu_model: cores[0]?.model ?? 'unknown',
    cores: cores.length,
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${process.platform} ${release()}`,
    /** Before the benchmark loaded the machine: other work skews both systems, a high value means rerun. */
    load_average_1m: Math.round(LOAD_AVERAGE_AT_START * 100) / 100,
  };
}

export function versions() {
  const opa = execFileSync(opaPath(), ['version']).toString();
  const packageVersion = (dir: string) => (JSON.parse(readFileSync(`${dir}/package.json`, 'utf8')) as { version: string }).version;
  return {
    arbiter: packageVersion('.'),
    node: process.version,
    opa: /^Version: (.+)$/m.exec(opa)?.[1] ?? 'unknown',
    packages: Object.fromEntries(PACKAGES.map((name) => [name, packageVersion(`node_modules/${name}`)])),
  };
}
