import { createServer } from 'node:net';

function listenOn(port: number, host: string): Promise<number | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(null));
    server.listen(port, host, () => {
      const address = server.address();
      const bound = typeof address === 'object' && address ? address.port : null;
      server.close(() => resolve(bound));
    });
  });
}

/**
 * `preferred` when nothing listens there, else a free port the system picks. The fixed ports make
 * the printed URLs the same every run; a second stack (or `npm run sim`) must not stop this one.
 * Another process could take the port between this check and its use; for a dev stack that race
 * only means a start error that names the port.
 */
export async function preferredPort(preferred: number, host = '127.0.0.1'): Promise<number> {
  if ((await listenOn(preferred, host)) !== null) return preferred;
  return freePort(host);
}

/** A port nothing listens on right now (for a child process that must be told its port). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const port = await listenOn(0, host);
  if (port === null) throw new Error(`no free TCP port on ${host}`);
  return port;
}
