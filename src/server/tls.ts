import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { TlsConfig } from '../config/gateway.ts';
import { ConfigError } from '../errors.ts';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

/**
 * Reads server.tls's files and checks that they make a usable TLS context (PEM that parses, a
 * key that matches its certificate), so a bad file stops start-up, and `config check`, naming
 * its key instead of failing when the server starts listening.
 */
export function readTlsMaterial(tls: TlsConfig): TlsMaterial {
  const read = (file: string, key: 'cert_file' | 'key_file' | 'ca_file') => {
    try {
      return readFileSync(file);
    } catch (error) {
      throw new ConfigError([{ path: `server.tls.${key}`, message: `cannot read ${file}: ${(error as Error).message}` }]);
    }
  };
  const material: TlsMaterial = {
    cert: read(tls.cert_file, 'cert_file'),
    key: read(tls.key_file, 'key_file'),
    ...(tls.ca_file !== undefined && { ca: read(tls.ca_file, 'ca_file') }),
  };
  try {
    createSecureContext(material);
  } catch (error) {
    throw new ConfigError([{ path: 'server.tls', message: `the certificate, key and CA files do not make a TLS context: ${(error as Error).message}` }]);
  }
  return material;
}
