import type { Server } from 'node:net';
import type { Logger } from 'pino';

/** A burst of refused connections is one log line per period, with how many it covers. */
const LOG_PERIOD_MS = 10_000;

/**
 * Caps the open connections of `server` at `max` (server.max_connections). Node closes a
 * connection past the cap as soon as it is accepted and emits `drop`: each one is counted,
 * and logged at most once per LOG_PERIOD_MS so a client reconnecting in a loop cannot flood
 * the log it is meant to show up in.
 */
export function capConnections(server: Server, max: number, options: { logger: Logger; dropped: () => void }): void {
  server.maxConnections = max;
  let lastLogged = -Infinity;
  let unlogged = 0;
  server.on('drop', (connection?: { remoteAddress?: string }) => {
    options.dropped();
    unlogged++;
    const now = performance.now();
    if (now - lastLogged < LOG_PERIOD_MS) return;
    options.logger.warn(
      { max_connections: max, dropped: unlogged, remote_address: connection?.remoteAddress },
      'connections refused: server.max_connections are open (this line is written at most once per 10 s; dropped counts the connections since the last one)',
    );
    lastLogged = now;
    unlogged = 0;
  });
}
