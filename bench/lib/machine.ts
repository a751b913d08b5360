import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { opaPath } from '../../src/toolchain/opa.ts';

const PACKAGES = ['hono', '@hono/node-server', 'jose', '@open-policy-agent/opa-wasm', 'pino', 'autocannon'];

/** What the figures were measured on: they mean little without it. */
export function machineInfo() {
  const cores = cpus();
  return {
    cpu_model: cores[0]?.model ?? 'unknown',
    cores: cores.length,
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${process.platform} ${release()}`,
    /** Other work on the machine skews both systems: a high value means rerun. */
    load_average_1m: Math.round(loadavg()[0]! * 100) / 100,
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
