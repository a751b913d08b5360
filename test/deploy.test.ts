import { chmodSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { createCheckpointKey, loadCheckpointKey } from '../src/decisions/chain.ts';
import { tempDir } from './support/arbiter.ts';

/** The documents of the Kubernetes example, by kind (the first of each). */
function kubernetesExample(): Record<string, Record<string, any>> {
  const documents = parseAllDocuments(readFileSync('deploy/kubernetes/arbiter.yaml', 'utf8')).map((document) => document.toJS() as Record<string, any>);
  return Object.fromEntries(documents.reverse().map((document) => [document.kind as string, document]));
}

describe('the Kubernetes example', () => {
  it('keeps the state volume from being made group-readable at every mount, which would stop a restart on it (the checkpoint key)', () => {
    // What the kubelet does to a volume that supports ownership management (a PersistentVolumeClaim,
    // as the example's comments advise for state that survives a pod) each time it mounts it for a
    // pod with fsGroup, unless fsGroupChangePolicy is OnRootMismatch: every file gets rw for the group.
    const dir = tempDir('arbiter-deploy-');
    const key = join(dir, 'decisions.db.checkpoint-key.jwk');
    createCheckpointKey(key);
    chmodSync(key, statSync(key).mode | 0o660);
    expect(() => loadCheckpointKey(key)).toThrow(expect.objectContaining({ code: 'checkpoint_key_insecure' }));

    // So the example must not let it happen on a remount: with OnRootMismatch the kubelet changes
    // nothing once the volume's root already belongs to the group (after the first mount).
    const pod = kubernetesExample().Deployment!.spec.template.spec;
    expect(pod.securityContext.fsGroup).toBeDefined();
    expect(pod.securityContext.fsGroupChangePolicy).toBe('OnRootMismatch');
  });

  it('requests the memory a replica uses once serving, so it is not the first evicted under node pressure', () => {
    // Measured with the container configuration, the embedded bundles and no live data at all:
    // about 265 MB resident after a few thousand decisions with one evaluation worker (the
    // default), 290 MB with two. A request below that is exceeded from the start; live data
    // (a copy in each worker) only adds to it.
    const { resources } = kubernetesExample().Deployment!.spec.template.spec.containers[0];
    expect(bytes(resources.requests.memory)).toBeGreaterThanOrEqual(384 * 2 ** 20);
    expect(bytes(resources.limits.memory)).toBeGreaterThan(bytes(resources.requests.memory));
  });

  it('probes and scrapes the diagnostic listener its configuration opens, not the decision port a flood can fill', () => {
    const example = kubernetesExample();
    const config = parseConfig(parse(example.ConfigMap!.data['arbiter.yaml']) as Record<string, unknown>);
    const pod = example.Deployment!.spec.template;
    const container = pod.spec.containers[0];
    const port = (name: string) => container.ports.find((entry: { name: string }) => entry.name === name)?.containerPort;
    expect(config.server.diagnostic).toMatchObject({ host: '0.0.0.0', port: port('diagnostic') });
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) expect(container[probe].httpGet.port, probe).toBe('diagnostic');
    expect(Number(pod.metadata.annotations['prometheus.io/port'])).toBe(config.server.diagnostic!.port);
  });
});

/** A Kubernetes memory quantity (binary suffixes only, as the example uses) in bytes. */
function bytes(quantity: string): number {
  const match = /^(\d+)(Ki|Mi|Gi)?$/.exec(quantity);
  if (!match) throw new Error(`unexpected quantity ${quantity}`);
  return Number(match[1]) * 2 ** ({ Ki: 10, Mi: 20, Gi: 30 }[match[2] as 'Ki' | 'Mi' | 'Gi'] ?? 0);
}

describe('the container image', () => {
  // What the Dockerfile copies from the build context (not from another stage).
  const copied = [...readFileSync('Dockerfile', 'utf8').matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((match) => match[1]!.split(' '));
  const ignore = readFileSync('.dockerignore', 'utf8').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));

  it('gets every file it copies: the sources, the embedded bundles and its configuration', () => {
    expect(copied).toEqual(expect.arrayContaining(['src', 'bundles', 'deploy/docker/arbiter.yaml']));
    const files = copied.flatMap((source) => (statSync(source).isDirectory() ? readdirSync(source, { recursive: true, encoding: 'utf8' }).map((file) => join(source, file)) : [source]));
    expect(files).toContain('bundles/authz.tar.gz');
    for (const file of files) expect(dockerIgnores(ignore, file), file).toBe(false);
  });

  it('keeps local secrets and state out of the build context', () => {
    // What the README's bundle-signing steps write in the working directory (the private key
    // among them), what `npm start` writes, and dependencies built for this machine: the legacy
    // builder sends the whole context to the daemon, wherever that runs.
    for (const file of ['key.pem', 'claims.json', 'authz.tar.gz', '.arbiter/dev-issuer.jwk.json', '.arbiter/decisions.db.checkpoint-key.jwk', 'node_modules/jose/package.json']) {
      expect(dockerIgnores(ignore, file), file).toBe(true);
    }
  });
});

/**
 * Whether .dockerignore `patterns` exclude `file` (a path relative to the context): as Docker
 * matches them, against the path and each of its parent directories, `*` and `?` within one
 * segment, `**` across any number. The file has no `!` exceptions.
 */
function dockerIgnores(patterns: readonly string[], file: string): boolean {
  const segments = file.split('/');
  const candidates = segments.map((_, index) => segments.slice(0, index + 1).join('/'));
  return patterns.some((pattern) => {
    const source = pattern
      .replace(/^\//, '')
      .split(/(\*\*\/?|\*|\?)/)
      .map((part) => (part.startsWith('**') ? '(?:.*/)?' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
      .join('');
    const regex = new RegExp(`^${source}$`);
    return candidates.some((candidate) => regex.test(candidate));
  });
}
