import type { Server } from 'node:net';
import type { Logger } from 'pino';
import { ThrottledWarnings } from './throttled-log.ts';

/**
 * Caps the open connections of `server` at `max` (server.max_connections). Node closes a
 * connection past the cap as soon as it is accepted and emits `drop`: each one is counted, and
 * logged through ThrottledWarnings, so a client reconnecting in a loop cannot flood the log it
 * is meant to show up in.
 */
export function capConnections(server: Server, max: number, options: { logger: Logger; dropped: () => void }): void {
  server.maxConnections = max;
  const warnings = new ThrottledWarnings(options.logger);
  server.on('drop', (connection?: { remoteAddress?: string }) => {
    options.dropped();
    warnings.warn('max_connections', { max_connections: max, remote_address: connection?.remoteAddress }, 'connection refused: server.max_connections are open');
  });
}
