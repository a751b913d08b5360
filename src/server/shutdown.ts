import type { Server } from 'node:http';

/**
 * Stops accepting connections and lets requests already accepted finish. Idle keep-alive
 * connections are closed as soon as they have no request in flight; whatever is still
 * open at the deadline is cut. Resolves when the server is closed.
 */
export function drainServer(server: Server, deadlineMs: number): Promise<{ forced: boolean }> {
  return new Promise((resolve) => {
    let forced = false;
    const sweep = setInterval(() => server.closeIdleConnections(), 50);
    const deadline = setTimeout(() => {
      forced = true;
      server.closeAllConnections();
    }, deadlineMs);
    server.close(() => {
      clearInterval(sweep);
      clearTimeout(deadline);
      resolve({ forced });
    });
    server.closeIdleConnections();
  });
}
