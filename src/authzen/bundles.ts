import type { AuthzenConfig } from '../config/schema.ts';
import type { PolicyBundle } from '../policy/bundle.ts';
import type { BundleRegistry } from '../policy/registry.ts';
import { bundleAuthzenMetadataSchema, type SearchKind } from './schema.ts';

/** Header naming the tenant whose bundle answers; `context.tenant` is read when it is absent. */
export const TENANT_HEADER = 'x-tenant';

/** An active bundle whose manifest declares AuthZEN support, with its entrypoints checked. */
export interface AuthzenBundle {
  readonly bundle: PolicyBundle;
  /** The evaluation entrypoint below the bundle name, as DecisionPipeline's `rule`. */
  readonly rule: string;
  /** Candidate entrypoints per search kind; a missing kind is a search the bundle does not support. */
  readonly search: Readonly<Partial<Record<SearchKind, string>>>;
}

export type AuthzenBundleResolution = { ok: true; authzen: AuthzenBundle } | { ok: false; message: string };

/**
 * Picks the bundle that answers an AuthZEN request: `tenants[tenant]` when the request names
 * a tenant, `default_bundle` otherwise. A bundle serves AuthZEN only when its manifest
 * metadata declares an `authzen` block whose entrypoints the bundle really has.
 */
export class AuthzenBundles {
  readonly #registry: BundleRegistry;
  readonly #config: AuthzenConfig;
  /** Checked once per activated revision: a new revision is a new PolicyBundle object. */
  readonly #checked = new WeakMap<PolicyBundle, AuthzenBundleResolution>();

  constructor(registry: BundleRegistry, config: AuthzenConfig) {
    this.#registry = registry;
    this.#config = config;
  }

  resolve(tenant: string | undefined): AuthzenBundleResolution {
    const { default_bundle, tenants } = this.#config;
    const name = tenant === undefined ? default_bundle : Object.hasOwn(tenants, tenant) ? tenants[tenant] : undefined;
    if (name === undefined) {
      return {
        ok: false,
        message: tenant === undefined ? 'no AuthZEN bundle is configured (authzen.default_bundle)' : `no AuthZEN bundle is configured for tenant ${JSON.stringify(tenant)}`,
      };
    }
    const bundle = this.#registry.get(name);
    if (!bundle) return { ok: false, message: `no active bundle named ${name}` };
    let resolution = this.#checked.get(bundle);
    if (!resolution) {
      resolution = checkAuthzenSupport(bundle);
      this.#checked.set(bundle, resolution);
    }
    return resolution;
  }
}

/** The tenant of a request: the X-Tenant header, else a string `context.tenant`. */
export function tenantOf(header: string | undefined, context: Record<string, unknown> | undefined): string | undefined {
  if (header !== undefined) return header;
  const fromContext = context?.tenant;
  return typeof fromContext === 'string' ? fromContext : undefined;
}

function checkAuthzenSupport(bundle: PolicyBundle): AuthzenBundleResolution {
  const declared = bundle.manifest.metadata?.authzen;
  if (declared === undefined) return { ok: false, message: `bundle ${bundle.name} does not declare authzen in its manifest metadata` };
  const parsed = bundleAuthzenMetadataSchema.safeParse(declared);
  if (!parsed.success) return { ok: false, message: `bundle ${bundle.name} has invalid authzen metadata: ${parsed.error.issues[0]!.message}` };
  const { evaluation, search } = parsed.data;

  const prefix = `${bundle.name}/`;
  if (!evaluation.startsWith(prefix)) {
    return { ok: false, message: `bundle ${bundle.name}: authzen.evaluation ${evaluation} must be an entrypoint below ${prefix}` };
  }
  for (const entrypoint of [evaluation, ...Object.values(search).filter((e) => e !== undefined)]) {
    if (!bundle.entrypoints.has(entrypoint)) {
      return { ok: false, message: `bundle ${bundle.name}: authzen metadata names ${entrypoint}, which is not an entrypoint of the bundle` };
    }
  }
  return { ok: true, authzen: { bundle, rule: evaluation.slice(prefix.length), search } };
}
