import type { Server } from 'node:net';
import type { ThrottledWarnings } from './throttled-log.ts';

/** Which cap a listener has: its key, and the throttled log's reason for its refusals. */
export interface ConnectionCapSetting {
  key: 'server.max_connections' | 'server.diagnostic.max_connections';
  reason: 'max_connections' | 'diagnostic_max_connections';
}

export const MAIN_CONNECTION_CAP: ConnectionCapSetting = { key: 'server.max_connections', reason: 'max_connections' };

/**
 * Caps the open connections of `server` at `max` (server.max_connections, or the diagnostic
 * listener's own). Node closes a connection past the cap as soon as it is accepted and emits
 * `drop`: each one is counted, and logged through ThrottledWarnings, so a client reconnecting in
 * a loop cannot flood the log it is meant to show up in.
 */
export function capConnections(
  server: Server,
  max: number,
  options: { warnings: ThrottledWarnings; dropped: () => void; setting?: ConnectionCapSetting },
): void {
  const { key, reason } = options.setting ?? MAIN_CONNECTION_CAP;
  server.maxConnections = max;
  server.on('drop', (connection?: { remoteAddress?: string }) => {
    options.dropped();
    options.warnings.warn(reason, { max_connections: max, remote_address: connection?.remoteAddress }, `connection refused: ${key} are open`);
  });
}
