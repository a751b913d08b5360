import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { ArbiterError, ConfigError } from '../errors.ts';
import { DEV_AUDIENCES, DEV_ISSUER, loadOrCreateDevIssuerKey, mintDevToken } from '../tokens/dev-issuer.ts';

const HELP = `Usage: arbiter token --sub <subject> [options]

Mints an access token from the local development issuer (${DEV_ISSUER}).
  --sub <subject>        sub claim (required)
  --scope <scopes>       space-separated scopes
  --aud <audience>       audience (default ${DEV_AUDIENCES[0]}; the development issuer's tokens are
                         accepted only for ${DEV_AUDIENCES.join(' and ')})
  --ttl <seconds>        lifetime (default 3600)
  --age <seconds>        backdate iat, e.g. to try token-age rules
  --claim <name=value>   extra claim; value parsed as JSON when it can be (repeatable; not
                         iss, sub, aud, iat, exp or jti, which are always set; nor scope or
                         act together with --scope or --act)
  --act <subject>        delegation: actor chain, current actor first (repeatable)
  -c, --config <file>    configuration that names dev_issuer.key_file (default $ARBITER_CONFIG)
  --json                 print {"token": ...} instead of the bare token`;

/** Claims every token gets from the issuer or an option: a --claim of the same name would be lost. */
const SET_BY_OPTIONS = new Map([
  ['iss', `the development issuer is always ${DEV_ISSUER}`],
  ['sub', 'use --sub'],
  ['aud', 'use --aud'],
  ['iat', 'use --age'],
  ['exp', 'use --ttl (and --age)'],
  ['jti', 'every token gets a random jti'],
]);

export async function tokenCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sub: { type: 'string' },
      scope: { type: 'string' },
      aud: { type: 'string' },
      ttl: { type: 'string' },
      age: { type: 'string' },
      claim: { type: 'string', multiple: true },
      act: { type: 'string', multiple: true },
      config: { type: 'string', short: 'c' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.sub) throw new ArbiterError('usage', `--sub is required\n\n${HELP}`);
  const actors = values.act ?? [];
  const claims: Record<string, unknown> = {};
  for (const pair of values.claim ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new ArbiterError('usage', `--claim expects name=value, got ${JSON.stringify(pair)}`);
    const name = pair.slice(0, at);
    const setBy = SET_BY_OPTIONS.get(name) ?? (name === 'scope' && values.scope !== undefined ? 'by --scope' : undefined) ?? (name === 'act' && actors.length > 0 ? 'by --act' : undefined);
    if (setBy !== undefined) throw new ArbiterError('usage', `--claim ${name}=... would be overwritten: ${setBy}`);
    Object.defineProperty(claims, name, { value: parseValue(pair.slice(at + 1)), enumerable: true });
  }
  if (actors.length > 0) claims.act = actors.reduceRight<Record<string, unknown> | undefined>((inner, sub) => (inner ? { sub, act: inner } : { sub }), undefined);
  const config = loadConfig({ file: values.config ?? (process.env.ARBITER_CONFIG || undefined) });
  if (!config.dev_issuer.enabled) {
    throw new ConfigError([{ path: 'dev_issuer.enabled', message: 'the development issuer is not enabled in this configuration' }]);
  }
  const key = await loadOrCreateDevIssuerKey(config.dev_issuer.key_file);
  const token = await mintDevToken(key, {
    sub: values.sub,
    scope: values.scope,
    aud: values.aud,
    ttlSeconds: values.ttl === undefined ? undefined : seconds(values.ttl, '--ttl'),
    ageSeconds: values.age === undefined ? undefined : seconds(values.age, '--age'),
    claims,
  });
  console.log(values.json ? JSON.stringify({ token }) : token);
  return 0;
}

function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function seconds(text: string, flag: string): number {
  // Digits only: Number() reads "" and " " as 0 (an unset variable would mint a token expired
  // on arrival), and "0x10" or "1e3" as numbers nobody meant to type.
  const value = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value)) throw new ArbiterError('usage', `${flag} expects whole seconds, got ${JSON.stringify(text)}`);
  return value;
}
