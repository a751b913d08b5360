import { describe, expect, it } from 'vitest';
import { overlay } from '../src/policy/overlay.ts';

describe('overlay: bundle data over live data', () => {
  it('replaces what lies under each root with the bundle\'s data, and keeps the rest of live data', () => {
    const live = { authz: { injected: true }, entitlements: { alice: {} } };
    const merged = overlay(live, { data: { authz: { actions: {} } }, roots: ['authz'] });
    // A live document written under the root before the bundle claimed it is not merged in.
    expect(merged).toEqual({ authz: { actions: {} }, entitlements: { alice: {} } });
    expect(live).toEqual({ authz: { injected: true }, entitlements: { alice: {} } });
  });

  it('hides live data under a root the bundle has no data for, and leaves siblings of a nested root', () => {
    const live = { echo: { shadowed: true }, tenants: { acme: { plan: 'live' }, globex: { plan: 'free' } } };
    const merged = overlay(live, { data: { tenants: { acme: { plan: 'gold' } } }, roots: ['echo', 'tenants/acme'] });
    expect(merged).toEqual({ tenants: { acme: { plan: 'gold' }, globex: { plan: 'free' } } });
    // Live data the roots do not reach is shared, not copied.
    expect(merged.tenants).not.toBe(live.tenants);
    expect((merged.tenants as Record<string, unknown>).globex).toBe(live.tenants.globex);
  });

  it('gives the root "" (all of data) to the bundle, and keeps __proto__ a plain key', () => {
    expect(overlay({ anything: 1 }, { data: { own: 2 }, roots: [''] })).toEqual({ own: 2 });
    const live = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as Record<string, unknown>;
    const merged = overlay(live, { data: { b: 2 }, roots: ['b'] });
    expect(Object.hasOwn(merged, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
