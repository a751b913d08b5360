/** Entitlement documents of a chosen size, shaped like examples/entitlements.json. */

const ACTION_SETS = [
  ['invoices.read', 'invoices.list'],
  ['expenses.*'],
  ['invoices.approve'],
  ['expenses.read', 'expenses.submit'],
  ['payments.send'],
] as const;
const TENANT_SETS = [['acme'], ['acme', 'globex'], ['acme']] as const;
/** 2028-01-01: far enough ahead that every generated grant is active during a run. */
const EXPIRES_AT = 1_830_297_600;

export interface SubjectEntitlements {
  description: string;
  grants: { id: string; actions: string[]; tenants: string[]; expires_at?: number }[];
}

/** Subject ids the default policy's subject mappings accept (`user:*@acme.example`). */
export function subjectId(label: string): string {
  return `user:${label}@acme.example`;
}

/** One subject's entitlements: 1 to 4 grants, some with tenants beyond acme, some expiring. */
export function subjectEntitlements(i: number): SubjectEntitlements {
  const grants = Array.from({ length: 1 + (i % 4) }, (_, g) => ({
    id: `ent-${i}-${g}`,
    actions: [...ACTION_SETS[(i + g) % ACTION_SETS.length]!],
    tenants: [...TENANT_SETS[(i + g) % TENANT_SETS.length]!],
    ...((i + g) % 5 === 0 && { expires_at: EXPIRES_AT }),
  }));
  return { description: `Generated subject ${i}, employee of Acme.`, grants };
}

/** A grant of invoices.read in tenant acme: what a probe subject needs to be allowed. */
export function invoiceReader(label: string): SubjectEntitlements {
  return {
    description: `Probe subject ${label}.`,
    grants: [{ id: `ent-${label}-invoices`, actions: ['invoices.read', 'invoices.list'], tenants: ['acme'] }],
  };
}

/** An entitlements document whose serialized size is `targetBytes`, give or take one subject. */
export function entitlementsOfSize(targetBytes: number): { document: Record<string, SubjectEntitlements>; subjects: number } {
  const document: Record<string, SubjectEntitlements> = {};
  let bytes = 2;
  let i = 0;
  while (bytes < targetBytes) {
    const id = subjectId(`gen-${String(i).padStart(7, '0')}`);
    const value = subjectEntitlements(i);
    document[id] = value;
    bytes += JSON.stringify(id).length + JSON.stringify(value).length + 2;
    i++;
  }
  return { document, subjects: i };
}
