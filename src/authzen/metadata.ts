import type { AuthzenBundle } from './bundles.ts';

export const AUTHZEN_PATHS = {
  evaluation: '/access/v1/evaluation',
  evaluations: '/access/v1/evaluations',
  subject: '/access/v1/search/subject',
  resource: '/access/v1/search/resource',
  action: '/access/v1/search/action',
} as const;

export const METADATA_PATH = '/.well-known/authzen-configuration';

/**
 * The route serving the metadata of a PDP identifier with a path (`authzen.public_url`
 * https://pdp.example.com/authz): AuthZEN 1.0 puts the document at the well-known string
 * inserted between the host and that path, `/.well-known/authzen-configuration/authz`, which is
 * where a PEP given the identifier looks. A parameter, not the literal path, so that no character
 * of the configured path is read as route syntax; the handler answers only the configured path.
 */
export const IDENTIFIER_METADATA_ROUTE = `${METADATA_PATH}/:identifier_path{.+}`;

/** The path of a PDP identifier (`authzen.public_url`) without trailing slashes: '' for none. */
export function identifierPath(publicUrl: string | undefined): string {
  return publicUrl === undefined ? '' : new URL(publicUrl).pathname.replace(/\/+$/, '');
}

/**
 * The PDP metadata document (AuthZEN 1.0, "Policy Decision Point Metadata"). A search
 * endpoint is listed only when the bundle that would answer supports that search: the spec
 * reads an absent endpoint as "not supported". `capabilities` is omitted because Arbiter
 * implements no registered capability, and parameters without values must be omitted.
 */
export function pdpMetadata(baseUrl: string, authzen: AuthzenBundle | undefined): Record<string, string> {
  const metadata: Record<string, string> = {
    policy_decision_point: baseUrl,
    access_evaluation_endpoint: baseUrl + AUTHZEN_PATHS.evaluation,
    access_evaluations_endpoint: baseUrl + AUTHZEN_PATHS.evaluations,
  };
  for (const kind of ['subject', 'resource', 'action'] as const) {
    if (authzen?.search[kind] !== undefined) metadata[`search_${kind}_endpoint`] = baseUrl + AUTHZEN_PATHS[kind];
  }
  return metadata;
}
