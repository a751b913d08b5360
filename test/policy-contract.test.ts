import { describe, expect, it } from 'vitest';
import { isPolicyResult, policyResultSchema } from '../src/policy/contract.ts';
import { checkContract } from '../src/policy/engine.ts';

/** Results a policy may return: each one is judged by the hand-written check and by the schema. */
const CASES: Array<[string, unknown]> = [
  ['minimal allow', { allow: true, reasons: [] }],
  ['deny with reasons and obligations', { allow: false, reasons: [{ code: 'a', message: 'm', extra: [1] }], obligations: [{ type: 'step_up', max_token_age_s: 300 }] }],
  ['extra top-level fields', { allow: true, reasons: [{ code: 'x' }], granted_scopes: ['s'] }],
  ['empty obligations', { allow: false, reasons: [], obligations: [] }],
  ['allow as a string', { allow: 'true', reasons: [] }],
  ['allow missing', { reasons: [] }],
  ['reasons missing', { allow: true }],
  ['reasons an object', { allow: true, reasons: { code: 'a' } }],
  ['reason without code', { allow: false, reasons: [{ message: 'm' }] }],
  ['reason with empty code', { allow: false, reasons: [{ code: '' }] }],
  ['reason with numeric code', { allow: false, reasons: [{ code: 7 }] }],
  ['reason message a number', { allow: false, reasons: [{ code: 'a', message: 1 }] }],
  ['reason message null', { allow: false, reasons: [{ code: 'a', message: null }] }],
  ['reason an array', { allow: false, reasons: [['code']] }],
  ['reason null', { allow: false, reasons: [null] }],
  ['obligations null', { allow: false, reasons: [], obligations: null }],
  ['obligation without type', { allow: false, reasons: [], obligations: [{ kind: 'x' }] }],
  ['obligation with empty type', { allow: false, reasons: [], obligations: [{ type: '' }] }],
  ['obligations a string', { allow: false, reasons: [], obligations: 'step_up' }],
  ['result an array', [{ allow: true, reasons: [] }]],
  ['result null', null],
  ['result a boolean', true],
];

describe('decision contract', () => {
  it.each(CASES)('the fast check agrees with the schema: %s', (_name, value) => {
    expect(isPolicyResult(value)).toBe(policyResultSchema.safeParse(value).success);
  });

  it('accepts a valid result as it is and names the field of an invalid one', () => {
    const valid = { allow: true, reasons: [{ code: 'scope_granted', scope: 'invoices.read' }], obligations: [] };
    expect(checkContract([{ result: valid }])).toEqual({ ok: true, result: valid });
    const invalid = checkContract([{ result: { allow: false, reasons: [{ code: '' }] } }]);
    expect(invalid).toMatchObject({ ok: false, code: 'policy_contract_violation' });
    expect(invalid.ok === false && invalid.message).toMatch(/reasons\.0\.code/);
    expect(checkContract([])).toMatchObject({ ok: false, code: 'policy_contract_violation' });
  });
});
