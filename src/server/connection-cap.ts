import type { Server } from 'node:net';
import type { ThrottledWarnings } from './throttled-log.ts';

/**
 * Caps the open connections of `server` at `max` (server.max_connections). Node closes a
 * connection past the cap as soon as it is accepted and emits `drop`: each one is counted, and
 * logged through ThrottledWarnings, so a client reconnecting in a loop cannot flood the log it
 * is meant to show up in.
 */
export function capConnections(server: Server, max: number, options: { warnings: ThrottledWarnings; dropped: () => void }): void {
  server.maxConnections = max;
  server.on('drop', (connection?: { remoteAddress?: string }) => {
    options.dropped();
    options.warnings.warn('max_connections', { max_connections: max, remote_address: connection?.remoteAddress }, 'connection refused: server.max_connections are open');
  });
}
