import type { Config } from './schema.ts';

/** The bundles the configuration routes decisions to, by the key that names each: start-up protects them and says when nothing serves one, and so does config check. */
export function routedBundles(config: Pick<Config, 'bundles' | 'authzen'>): [key: string, bundle: string][] {
  return [
    ['bundles.default', config.bundles.default],
    ...(config.authzen.default_bundle === undefined ? [] : [['authzen.default_bundle', config.authzen.default_bundle] as [string, string]]),
    ...Object.entries(config.authzen.tenants).map(([tenant, bundle]): [string, string] => [`authzen.tenants.${tenant}`, bundle]),
  ];
}
