import { describe, expect, it } from 'vitest';
import { decisionRecordSchema, isDecisionRecord } from '../src/decisions/record.ts';
import { decision } from './support/decisions.ts';

const valid = decision({ reasons: ['granted', 'mfa_seen'] });

/** Variants of a valid record: each is judged by the hand-written check and by the schema. */
const CASES: Array<[string, unknown]> = [
  ['a valid record', valid],
  ['with a rule', { ...valid, rule: 'decision' }],
  ['rule undefined', { ...valid, rule: undefined }],
  ['empty rule', { ...valid, rule: '' }],
  ['null caller, bundle and revision', { ...valid, caller: null, bundle: null, revision: null }],
  ['an unknown member', { ...valid, token: 'eyJ...' }],
  ['a data version', { ...valid, data_version: 42 }],
  ['data version 0', { ...valid, data_version: 0 }],
  ['data version null', { ...valid, data_version: null }],
  ['data version negative', { ...valid, data_version: -1 }],
  ['data version fractional', { ...valid, data_version: 1.5 }],
  ['data version a string', { ...valid, data_version: '3' }],
  ['data version past 2^53', { ...valid, data_version: 2 ** 60 }],
  ['decision_id not a UUID', { ...valid, decision_id: 'abc' }],
  ['decision_id a UUIDv4', { ...valid, decision_id: '3b241101-e2bb-4255-8caf-4136c566a962' }],
  ['decision_id in upper case', { ...valid, decision_id: valid.decision_id.toUpperCase() }],
  ['timestamp negative', { ...valid, timestamp: -1 }],
  ['timestamp fractional', { ...valid, timestamp: 1.5 }],
  ['timestamp past 2^53', { ...valid, timestamp: 2 ** 60 }],
  ['timestamp a string', { ...valid, timestamp: '1' }],
  ['caller missing', { ...valid, caller: undefined }],
  ['endpoint empty', { ...valid, endpoint: '' }],
  ['input an array', { ...valid, input: [] }],
  ['input null', { ...valid, input: null }],
  ['input with any members', { ...valid, input: { anything: [1, { x: null }] } }],
  ['claim_names with a number', { ...valid, claim_names: ['sub', 1] }],
  ['result with an extra member', { ...valid, result: { ...valid.result, extra: true } }],
  ['result allow missing', { ...valid, result: { reasons: [], obligations: [] } }],
  ['result obligations missing', { ...valid, result: { allow: true, reasons: [] } }],
  ['reason without code', { ...valid, result: { ...valid.result, reasons: [{ message: 'x' }] } }],
  ['reason with empty code', { ...valid, result: { ...valid.result, reasons: [{ code: '' }] } }],
  ['reason a string', { ...valid, result: { ...valid.result, reasons: ['granted'] } }],
  ['obligations of any items', { ...valid, result: { ...valid.result, obligations: [1, 'x', { type: 'step_up' }] } }],
  ['latency negative', { ...valid, latency_us: -1 }],
  ['latency infinite', { ...valid, latency_us: Infinity }],
  ['latency NaN', { ...valid, latency_us: NaN }],
  ['latency fractional', { ...valid, latency_us: 12.5 }],
  ['not an object', 'record'],
  ['null', null],
];

describe('decision record check', () => {
  it.each(CASES)('the fast check agrees with the schema: %s', (_name, value) => {
    expect(isDecisionRecord(value)).toBe(decisionRecordSchema.safeParse(value).success);
  });
});
