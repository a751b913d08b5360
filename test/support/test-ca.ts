import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';

/**
 * A test CA (openssl, in `dir`) and a server certificate it issued for `altNames` (`DNS:name`,
 * `IP:address`), with the CA trusted by this test process as NODE_EXTRA_CA_CERTS would have it,
 * by fetch and node:https alike, until `untrust` puts the default CAs back.
 */
export function trustedTestCertificate(dir: string, altNames: readonly string[]): { key: Buffer; cert: Buffer; untrust(): void } {
  const defaultCas = getCACertificates('default');
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=test-ca', '-days', '1');
  writeFileSync(join(dir, 'server.ext'), `subjectAltName=${altNames.join(',')}\n`);
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=test-server');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'server.ext');
  setDefaultCACertificates([...defaultCas, readFileSync(join(dir, 'ca.pem'), 'utf8')]);
  return { key: readFileSync(join(dir, 'server.key')), cert: readFileSync(join(dir, 'server.pem')), untrust: () => setDefaultCACertificates([...defaultCas]) };
}
