import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
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
});
