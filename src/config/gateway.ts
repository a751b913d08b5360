import { z } from 'zod';

/**
 * The SHA-256 of the empty string: what `printf %s "$KEY" | sha256sum` prints with KEY unset. A
 * key presented as a header of whitespace only (a non-breaking space, which HTTP keeps and the
 * gateway check trims) hashes to it, so as a configured key it would let in anyone.
 */
const EMPTY_KEY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** A gateway's caller id, as `arbiter gateway-key --id` checks it too. */
/** The slowest gateway.rate_limit.requests_per_second: one decision every 1000 s. */
const MIN_RATE_PER_SECOND = 0.001;

export const apiKeyIdSchema = z.string().trim().min(1).max(128);

/** The tenants a gateway key is bound to, as `arbiter gateway-key --tenant` checks them too. */
export const apiKeyTenantsSchema = z
  .array(z.string().min(1, 'must be a non-empty tenant name'))
  .min(1, 'list at least one tenant, or leave tenants out for a key that may ask for any')
  .superRefine((tenants, ctx) => {
    tenants.forEach((tenant, index) => {
      if (tenants.indexOf(tenant) !== index) ctx.addIssue({ code: 'custom', path: [index], message: `duplicate tenant ${JSON.stringify(tenant)}` });
    });
  });

/**
 * How gateways authenticate to the decision endpoints, and how much each may ask.
 * `none` is for loopback development only; production uses API keys or mTLS.
 */
export const gatewaySchema = z
  .strictObject({
    authentication: z
      .enum(['none', 'api_key', 'mtls'])
      .default('none')
      .describe('none (loopback only), api_key (Authorization: ApiKey <key> or Bearer <key>, or X-API-Key) or mtls (server.tls with client certificates).'),
    api_keys: z
      .array(
        z.strictObject({
          id: apiKeyIdSchema.describe('Caller identity recorded with every decision.'),
          sha256: z
            .string()
            .regex(/^[0-9a-f]{64}$/, 'must be the lowercase hex SHA-256 of the key (`arbiter gateway-key` prints it)')
            .refine((hash) => hash !== EMPTY_KEY_SHA256, 'is the SHA-256 of an empty key (a variable that was unset when it was hashed?): a header holding only spaces would present it; hash the key itself (`arbiter gateway-key` prints both)')
            .describe('Lowercase hex SHA-256 of the key: the key itself is never stored. Each key once: a hash listed under two ids stops start-up.'),
          tenants: apiKeyTenantsSchema
            .optional()
            .describe(
              'Tenants this key may ask decisions for (exact names, each one of authzen.tenants, or start-up stops): an AuthZEN request must name one of them (X-Tenant, else context.tenant), and one naming another tenant or none (authzen.default_bundle would answer it) is refused, 403 tenant_not_permitted, as are /v1/decide, /v1/issuance and the OPA data API, which name no tenant. Refusals are not decisions: not recorded in the decision log, counted in arbiter_gateway_tenant_refusals_total and logged. Unset: any tenant or none, on every decision endpoint. api_key authentication only (mtls gateways: gateway.client_certificates).',
            ),
        }),
      )
      .default([])
      .describe('Gateways allowed to ask for decisions with api_key authentication.'),
    client_certificates: z
      .array(
        z.strictObject({
          identity: z
            .string().trim().min(1).max(2048)
            .describe('The gateway as Arbiter identifies it by its certificate, as recorded with its decisions: the first URI SAN (e.g. a SPIFFE ID), else cn:<common name>.'),
          tenants: apiKeyTenantsSchema.describe('Tenants this gateway may ask decisions for, as gateway.api_keys[].tenants binds a key (same refusals, same checks against authzen.tenants).'),
        }),
      )
      .default([])
      .describe('Gateways with mtls authentication bound to tenants, by certificate identity. What a certificate the CA signed that is not listed may do: gateway.unlisted_certificates. mtls authentication only.'),
    unlisted_certificates: z
      .enum(['refuse', 'any_tenant'])
      .optional()
      .describe(
        'What a client certificate the CA verified gets when gateway.client_certificates does not list its identity: refuse (401 gateway_unauthenticated) or any_tenant (a gateway bound to no tenant). Default: refuse when client_certificates lists any gateway, so removing an entry, or a certificate that gains a URI SAN, takes access away instead of unbinding it; any_tenant when it lists none (one CA, one tenant). mtls authentication only.',
      ),
    rate_limit: z
      .strictObject({
        // A slower rate refuses nearly everything, and its wait overflows Retry-After's whole seconds (1e+21).
        requests_per_second: z
          .number()
          .min(MIN_RATE_PER_SECOND, `must be at least ${MIN_RATE_PER_SECOND} (one decision every ${1 / MIN_RATE_PER_SECOND} s): a slower rate refuses nearly every request; to refuse a caller, remove its key`)
          .optional()
          .describe(`Sustained rate per caller, in decisions: a request counts one, an AuthZEN batch one per evaluation, an AuthZEN search one per candidate evaluated; at least ${MIN_RATE_PER_SECOND}; unset: no rate limit.`),
        burst: z.number().int().positive().default(200).describe('Decisions a caller may ask at once above its rate; a larger batch is answered, and the caller then waits until its rate has paid for it: a batch or search is charged for its items or candidates before it runs, and one that starts while the caller owes for another is refused (429), so requests sent at once cannot each run a batch on one unit.'),
      })
      .prefault({}),
    max_concurrent: z.number().int().positive().default(4096).describe('Decision requests in flight at once (an AuthZEN batch counts once); beyond it: 429.'),
    max_concurrent_per_caller: z
      .number().int().positive().optional()
      .describe('Decision requests one caller (API key id, certificate identity; every caller is one with authentication none) may have in flight at once; beyond it: 429 overloaded for that caller only, so one gateway (e.g. one sending bodies slowly) cannot hold every slot of max_concurrent. At most max_concurrent. Unset: callers share max_concurrent.'),
  })
  .superRefine((gateway, ctx) => {
    if (gateway.max_concurrent_per_caller !== undefined && gateway.max_concurrent_per_caller > gateway.max_concurrent) {
      ctx.addIssue({ code: 'custom', path: ['max_concurrent_per_caller'], message: `more than max_concurrent (${gateway.max_concurrent}): it would never apply` });
    }
    if (gateway.authentication === 'api_key' && gateway.api_keys.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['api_keys'], message: 'api_key authentication needs at least one key' });
    }
    if (gateway.authentication !== 'api_key') {
      // Keys authenticate no one then: a binding would bind nothing while it looked in force.
      gateway.api_keys.forEach((key, index) => {
        if (key.tenants !== undefined) ctx.addIssue({ code: 'custom', path: ['api_keys', index, 'tenants'], message: `binds nothing with ${gateway.authentication} authentication: tenants apply to api_key authentication only` });
      });
    }
    if (gateway.authentication !== 'mtls' && gateway.client_certificates.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['client_certificates'], message: `binds nothing with ${gateway.authentication} authentication: client_certificates apply to mtls authentication only` });
    }
    if (gateway.unlisted_certificates !== undefined && gateway.authentication !== 'mtls') {
      ctx.addIssue({ code: 'custom', path: ['unlisted_certificates'], message: `applies to mtls authentication only, not ${gateway.authentication}` });
    }
    if (gateway.unlisted_certificates === 'refuse' && gateway.authentication === 'mtls' && gateway.client_certificates.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['unlisted_certificates'], message: 'refuse with no gateway.client_certificates would refuse every certificate: list the gateways' });
    }
    const identities = gateway.client_certificates.map((entry) => entry.identity);
    identities.forEach((identity, index) => {
      // Listed twice with other tenants, which list would bind it would depend on the order.
      if (identities.indexOf(identity) !== index) ctx.addIssue({ code: 'custom', path: ['client_certificates', index, 'identity'], message: `${identity} is listed more than once` });
    });
    // One key, one caller: with a hash listed twice the last entry would win, and a key bound to
    // tenants under one id would go unbound under the other.
    const hashes = gateway.api_keys.map((k) => k.sha256);
    hashes.forEach((hash, index) => {
      const first = hashes.indexOf(hash);
      if (first !== index) ctx.addIssue({ code: 'custom', path: ['api_keys', index, 'sha256'], message: `the same key as api_keys.${first} (${gateway.api_keys[first]!.id}): each key identifies one caller` });
    });
    // One caller, one entry: each entry whose id an earlier one has is named, as a hash listed twice is.
    const ids = gateway.api_keys.map((k) => k.id);
    ids.forEach((id, index) => {
      const first = ids.indexOf(id);
      if (first !== index) ctx.addIssue({ code: 'custom', path: ['api_keys', index, 'id'], message: `the same id as api_keys.${first} (${id}): each caller has one entry` });
    });
  });

export const tlsSchema = z.strictObject({
  cert_file: z.string().min(1).describe('PEM certificate chain of the server.'),
  key_file: z.string().min(1).describe('PEM private key of the server.'),
  ca_file: z.string().min(1).optional().describe('CA bundle for client certificates (required for gateway.authentication: mtls). Every certificate it verifies is a gateway\'s unless gateway.client_certificates lists the gateways (see gateway.unlisted_certificates): a CA of the gateways\' own, not one that signs other workloads\' certificates too.'),
});

export type GatewayConfig = z.infer<typeof gatewaySchema>;
export type TlsConfig = z.infer<typeof tlsSchema>;
