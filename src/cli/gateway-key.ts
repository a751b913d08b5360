import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { stringify as stringifyYaml } from 'yaml';
import { apiKeyIdSchema, apiKeyTenantsSchema } from '../config/gateway.ts';
import { ArbiterError } from '../errors.ts';

const HELP = `Usage: arbiter gateway-key --id <caller-id> [--tenant <name>]... [--json]

Generates a random API key for a gateway and prints it with the gateway.api_keys entry to
put in the configuration. Arbiter stores only the SHA-256 of the key; give the key itself
to the gateway (Authorization: ApiKey <key> or Bearer <key>, or X-API-Key).

  --tenant <name>   bind the key to this tenant (repeat for several): it may then ask only
                    AuthZEN requests naming one of them (gateway.api_keys[].tenants; each
                    must be a tenant of authzen.tenants)`;

export async function gatewayKeyCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { id: { type: 'string' }, tenant: { type: 'string', multiple: true }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.id) throw new ArbiterError('usage', `--id is required\n\n${HELP}`);
  // Checked as the configuration will check it: a key handed out for an id it refuses is wasted.
  const id = apiKeyIdSchema.safeParse(values.id);
  if (!id.success) throw new ArbiterError('usage', '--id must be 1-128 characters (gateway.api_keys[].id)');
  const tenants = values.tenant === undefined ? undefined : apiKeyTenantsSchema.safeParse(values.tenant);
  if (tenants?.success === false) throw new ArbiterError('usage', `--tenant: ${tenants.error.issues[0]!.message} (gateway.api_keys[].tenants)`);
  const key = `arb_${randomBytes(32).toString('base64url')}`;
  const entry = { id: id.data, sha256: createHash('sha256').update(key).digest('hex'), ...(tenants && { tenants: tenants.data }) };
  if (values.json) {
    console.log(JSON.stringify({ key, api_key: entry }));
  } else {
    // Written by the YAML library, so an id holding `#`, `: ` or quotes reads back as itself.
    const configuration = stringifyYaml({ gateway: { authentication: 'api_key', api_keys: [entry] } }).trimEnd();
    console.log(`key (give it to the gateway, it is not stored): ${key}\n\nconfiguration entry:\n${configuration}`);
  }
  return 0;
}
