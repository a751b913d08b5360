/**
 * What counts as this machine, for the outbound fetches whose destination is checked (bundle
 * polls, key sets over plain http): by address once a name is resolved, and by how a URL spells its host before.
 */
import { BlockList, isIP } from 'node:net';
import { unbracketed } from './host-literal.ts';

/**
 * Addresses a connection to which lands on this machine: loopback, and the unspecified address
 * (connecting to 0.0.0.0 or :: reaches what listens on loopback). BlockList checks an
 * IPv4-mapped IPv6 address (::ffff:127.0.0.1) against the IPv4 rules.
 */
const THIS_MACHINE = new BlockList();
THIS_MACHINE.addSubnet('127.0.0.0', 8, 'ipv4');
THIS_MACHINE.addSubnet('0.0.0.0', 8, 'ipv4');
THIS_MACHINE.addAddress('::1', 'ipv6');
THIS_MACHINE.addAddress('::', 'ipv6');

/** Whether a connection to `address` (an IP address) lands on this machine. */
export function isThisMachine(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && THIS_MACHINE.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * Whether a URL's hostname names this machine, in any spelling the URL parser leaves: an address
 * of THIS_MACHINE, `localhost` with or without its trailing dot, or a name under `.localhost`
 * (RFC 6761 has resolvers answer loopback for them). A name that DNS answers with a loopback
 * address is caught once resolved (isThisMachine): this refuses what needs no resolving.
 */
export function reachesThisMachine(hostname: string): boolean {
  const host = unbracketed(hostname);
  if (isIP(host) !== 0) return isThisMachine(host);
  const name = host.toLowerCase().replace(/\.$/, '');
  return name === 'localhost' || name.endsWith('.localhost');
}
