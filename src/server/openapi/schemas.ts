import { z } from 'zod';
import { RevocationSchema } from '../../data/revocation-schema.ts';
import { decisionRecordSchema, decisionResultSchema } from '../../decisions/record.ts';
import { obligationSchema, reasonSchema } from '../../policy/contract.ts';
import { storedRevisionSchema } from '../../policy/store.ts';

/**
 * Response shapes, described for the OpenAPI document. Requests are validated with the route
 * modules' own schemas; these describe what the handlers write, and test/openapi.test.ts parses
 * real responses with them so a handler cannot drift from its documentation unnoticed.
 */

const bundleRevision = z.strictObject({ bundle: z.string(), revision: z.string() });

export const decisionResponseSchema = z.strictObject({
  decision_id: z.string().describe('UUIDv7 of the decision, as recorded in the decision log.'),
  allow: z.boolean(),
  reasons: z.array(reasonSchema).describe('Why: stable reason codes from the policy (or token_* / no_active_bundle from Arbiter).'),
  obligations: z.array(obligationSchema).describe('What the caller must do when it acts on an allow.'),
  policy: bundleRevision.nullable().describe('Bundle and revision that decided; null when no bundle could answer.'),
  data_version: z.number().int().nullable().describe('Version of the live data the policy evaluated against; null when the deny came before or instead of an evaluation (no active bundle, a refused token). An audit_unavailable deny keeps the version of the evaluation whose record failed (null when none ran).'),
});

export const issuanceResponseSchema = decisionResponseSchema.extend({
  granted_scopes: z.array(z.string()).describe('The requested scopes the policy granted, each once: at least one on an allow, none on a deny. A scope that was not requested is never granted (an allow granting only such scopes is a policy_contract_violation deny).'),
  refused_scopes: z
    .array(z.looseObject({ scope: z.string(), code: z.string(), message: z.string().optional() }))
    .describe('Every other requested scope, with the code the policy refused it with, or else the reason the request was not granted it.'),
  max_ttl_s: z.number().int().min(0),
});

export const healthResponseSchema = z.strictObject({ status: z.literal('ok') });

export const readinessResponseSchema = z.strictObject({
  status: z.enum(['ready', 'not_ready']),
  bundles: z.array(z.strictObject({ name: z.string(), revision: z.string() })),
  problems: z.array(z.string()),
  degraded: z
    .array(z.string())
    .describe('What fails some requests while the replica stays ready: an issuer whose keys loaded before but cannot be refreshed now (its tokens deny token_keys_unavailable), an AuthZEN tenant whose bundle is not active (its requests answer 503), an AuthZEN bundle (authzen.default_bundle or a tenant\'s) that is active but declares no AuthZEN support in its manifest metadata (its requests answer 503); until a restart, decision log records no signed checkpoint covered at start-up (verify them: see the decision log documentation).'),
});

export const dataReadResponseSchema = z.strictObject({
  result: z.unknown(),
  version: z.number().int(),
  bundle: z.string().optional().describe('Present when the path is owned (read-only) by this active bundle.'),
});

export const dataVersionResponseSchema = z.strictObject({ version: z.number().int() });

export const revocationSchema = RevocationSchema;
/** One revocation answers with the committed entry (or the one in force it restates), a batch with all of them. */
export const revocationCreatedSchema = z.union([RevocationSchema, z.strictObject({ revocations: z.array(RevocationSchema) })]);
export const revocationPageSchema = z.strictObject({
  items: z.array(RevocationSchema),
  next_cursor: z.string().nullable().describe('Pass as `cursor` for the next page; null on the last page.'),
});

export const authzenDecisionSchema = z.strictObject({
  decision: z.boolean(),
  context: z.record(z.string(), z.unknown()).optional(),
});
export const authzenEvaluationsResponseSchema = z.strictObject({ evaluations: z.array(authzenDecisionSchema) });
export const authzenSearchResponseSchema = z.strictObject({
  results: z.array(z.record(z.string(), z.unknown())),
  page: z.strictObject({ next_token: z.string().describe('Empty on the last page.') }),
});
export const authzenMetadataSchema = z.record(z.string(), z.string());

export const opaDataResponseSchema = z.strictObject({
  decision_id: z.string(),
  result: z.unknown().optional().describe('Absent when the rule is undefined for this input, as in OPA.'),
});

/** BundleLifecycle's BundleStatus, as the bundle routes answer it. */
export const bundleStatusSchema = z.strictObject({
  name: z.string(),
  active: z
    .strictObject({
      revision: z.string(),
      digest: z.string().describe('sha256 of the archive, hex.'),
      activated_at: z.string().describe('RFC 3339 time.'),
      activated_by: z.string().describe('`<iss>#<sub>` of the admin; `pull:<url>` for a pulled bundle; arbiter:bundles.dir for the default from bundles.dir.'),
      source: z.enum(['store', 'embedded']).describe('store: pushed or pulled; embedded: the default from bundles.dir.'),
    })
    .nullable()
    .describe('The revision serving; null when none is.'),
  revisions: z.array(storedRevisionSchema).describe('Stored revisions that can be activated (those bundles.retention.max_revisions keeps).'),
});

export const bundleListSchema = z.strictObject({ bundles: z.array(bundleStatusSchema) });

export const bundleAcceptedSchema = z.strictObject({
  outcome: z.enum(['activated', 'unchanged']).describe('unchanged: this archive is the active revision already.'),
  revision: z.string(),
  digest: z.string().describe('sha256 of the archive, hex.'),
  bundle: bundleStatusSchema,
});

export const problemSchema = z.looseObject({
  type: z.string().describe('urn:arbiter:problem:<code>'),
  status: z.number().int(),
  code: z.string().describe('Stable, machine-readable; see x-problem-types at the top of this document.'),
  title: z.string(),
  detail: z.string().optional(),
  errors: z
    .array(z.strictObject({ pointer: z.string().describe('JSON pointer into the request body'), detail: z.string() }))
    .optional()
    .describe('Every offending field, at most 100 (a batch names each bad entry: /revocations/3/expires_at).'),
  errors_omitted: z.number().int().positive().optional().describe('How many more offending fields were found than `errors` lists.'),
  instance: z.string().optional().describe('Request path; absent when the HTTP layer refused the request before any route ran (malformed_request, headers_too_large, request_timeout, a CONNECT).'),
});

export const storedDecisionSchema = decisionRecordSchema
  .extend({
    seq: z.number().int().positive().describe('Position in the hash chain.'),
    prev_hash: z.string().describe('hash of the record before (hex sha256).'),
    hash: z.string().describe('sha256 over prev_hash, seq and the canonical JSON of the record.'),
  })
  .describe('A recorded decision: masked input without the raw token, result, bundle revision, chain link.');

export const decisionPageSchema = z.strictObject({
  decisions: z.array(storedDecisionSchema).describe('Newest first.'),
  next_cursor: z.string().nullable().describe('Pass as `cursor` for the next (older) page; null on the last page.'),
});

export const verifyReportSchema = z.strictObject({
  ok: z.boolean(),
  checked: z.number().int().describe('Records whose chain link was checked before the first mismatch.'),
  checkpoints_verified: z.number().int(),
  first_mismatch: z
    .strictObject({
      decision_id: z.string().nullable().describe('The record at fault (for record_missing, the first record after the gap); null when it no longer exists (truncated tail, bad or missing anchor).'),
      seq: z.number().int(),
      reason: z.enum(['anchor_signature_invalid', 'record_before_start', 'record_missing', 'prev_hash_mismatch', 'hash_mismatch', 'index_mismatch', 'index_corrupt', 'checkpoint_signature_invalid', 'checkpoint_mismatch', 'records_missing_at_end', 'checkpoint_missing', 'anchor_missing']),
    })
    .optional(),
});

const replayedResultSchema = decisionResultSchema.extend({ revision: z.string().nullable() });

export const replayReportSchema = z.strictObject({
  decision_id: z.string(),
  bundle: z.string(),
  entrypoint: z.string().describe('`<bundle>/<rule>` evaluated, as at decision time.'),
  recorded: replayedResultSchema.extend({
    data_version: z.number().int().nullable().optional().describe('Live data version the decision was made against (null: no policy ran; absent: recorded before data versions were).'),
  }),
  replayed: replayedResultSchema.extend({ data_version: z.number().int().describe('Live data version the replay evaluated against (today\'s, not the recorded one).') }),
  same: z.boolean().describe('allow, reasons, obligations and (OPA data API, issuance) the answered value are equal.'),
  masked: z.boolean().describe('decision_log.mask is configured: masked input fields were replayed masked.'),
});
