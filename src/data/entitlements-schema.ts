import { z } from 'zod';
import { MAX_FIELD_ERRORS } from '../errors.ts';
import { EPOCH_MILLISECONDS_MESSAGE, MAX_EPOCH_S } from './epoch-seconds.ts';
import { formatJsonPointer } from './json-pointer.ts';
import { isJsonObject, ownMember } from './json-value.ts';
import type { JsonValue } from './json-value.ts';
import type { DocumentCheck, DocumentIssue } from './documents.ts';

/**
 * The live document `entitlements` as the default policy reads it (rego/README.md, "Live
 * data"): subject id -> {grants: [{id, actions, tenants, expires_at?}]}. Other members are
 * kept (descriptions, a feed's own bookkeeping). Rego's `in` reads an object's values as a
 * list's, so `tenants: {"primary": "acme"}` would grant in tenant acme: such a write is refused.
 */
const EntitlementGrantSchema = z.looseObject({
  id: z.string().min(1),
  actions: z.array(z.string()),
  tenants: z.array(z.string()),
  /**
   * Epoch seconds; the grant stops applying once input.context.now reaches it. Bounded: one in
   * milliseconds would never be reached, a grant meant to lapse entitling for millennia.
   */
  expires_at: z.number().max(MAX_EPOCH_S, EPOCH_MILLISECONDS_MESSAGE).optional(),
});

const EntitlementSubjectSchema = z.looseObject({
  grants: z.array(EntitlementGrantSchema).optional(),
});

/**
 * What does not fit EntitlementSubjectSchema in the entitlements document, by pointer into
 * it. Only subjects whose entry differs from `previous` are checked (live data is copied on
 * write, so an untouched entry is the same object): a write of one subject costs that subject,
 * not the whole feed. `total` counts every issue found, `issues` holds the first of them.
 */
function entitlementsIssues(document: JsonValue, previous: JsonValue | undefined): { issues: DocumentIssue[]; total: number } {
  if (!isJsonObject(document)) return { issues: [{ pointer: '', detail: 'must be an object of subject ids to their entitlements' }], total: 1 };
  const issues: DocumentIssue[] = [];
  let total = 0;
  for (const [subject, entry] of Object.entries(document)) {
    if (isJsonObject(previous) && ownMember(previous, subject) === entry) continue;
    const parsed = EntitlementSubjectSchema.safeParse(entry);
    if (parsed.success) continue;
    for (const issue of parsed.error.issues) {
      total += 1;
      if (issues.length < MAX_FIELD_ERRORS) {
        issues.push({ pointer: formatJsonPointer([subject, ...issue.path]), detail: issue.message });
      }
    }
  }
  return { issues, total };
}

/** The check of the entitlements document: a write it refuses is 400 entitlements_invalid. */
const ENTITLEMENTS_CHECK: DocumentCheck = { code: 'entitlements_invalid', issues: entitlementsIssues };

/** The live documents checked on every write, by name: the entitlements one unless data.check_entitlements is false. */
export function liveDataChecks(checkEntitlements: boolean): ReadonlyMap<string, DocumentCheck> {
  return new Map(checkEntitlements ? [['entitlements', ENTITLEMENTS_CHECK]] : []);
}
