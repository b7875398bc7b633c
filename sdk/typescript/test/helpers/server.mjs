// A fake VoidVM server for the tests: HTTP on 127.0.0.1 plus a WebSocket endpoint at /ws.
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

export const ok = (data, status = 200, headers = {}) => ({
  status,
  headers,
  body: { success: true, data, message: 'OK', timestamp: '2024-01-01T12:00:00Z' },
});

export const fail = (status, code, message, details, headers = {}) => ({
  status,
  headers,
  body: { success: false, error: { code, message, details }, timestamp: '2024-01-01T12:00:00Z' },
});

export const vm = (id, extra = {}) => ({
  id,
  name: `name-${id}`,
  description: null,
  status: 'stopped',
  cpu: 2,
  memory: 2048,
  disk: 20,
  os: 'ubuntu20.04',
  image: 'img-1',
  owner: 'usr-1',
  ip: null,
  ports: null,
  status_reason: null,
  created_at: '2024-01-01T12:00:00Z',
  updated_at: '2024-01-01T12:00:00Z',
  started_at: null,
  ...extra,
});

/**
 * Starts the server. `route(req)` gets `{method, path, query, headers, body}` and returns
 * `{status, headers, body}` (body: object → JSON, string → as is). Every request is recorded
 * in `requests`; every WebSocket connection in `sockets` (each with its received `messages`).
 */
export async function startServer(route) {
  const requests = [];
  const sockets = [];
  let counter = 0;
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url, 'http://127.0.0.1');
    let body;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      body = raw;
    }
    const entry = {
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      body,
      raw,
    };
    requests.push(entry);
    const answer = (await route(entry)) ?? fail(404, 'NOT_FOUND', 'Not found');
    const requestId = `req-${++counter}`;
    const isString = typeof answer.body === 'string';
    res.writeHead(answer.status, {
      'Content-Type': isString ? 'text/html' : 'application/json',
      'X-Request-ID': requestId,
      ...answer.headers,
    });
    res.end(isString ? answer.body : answer.body === undefined ? '' : JSON.stringify(answer.body));
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  const wsListeners = [];
  wss.on('connection', (ws, req) => {
    const conn = { ws, url: new URL(req.url, 'http://127.0.0.1'), messages: [], waiters: [] };
    sockets.push(conn);
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      conn.messages.push(msg);
      for (const w of conn.waiters.splice(0)) w();
    });
    for (const fn of wsListeners) fn(conn);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    baseURL: `http://127.0.0.1:${port}/api/v1`,
    requests,
    sockets,
    onConnection(fn) {
      wsListeners.push(fn);
    },
    /** Resolves with the n-th socket (0-based) once it is connected. */
    async socket(n = 0) {
      while (!sockets[n]) await new Promise((r) => setTimeout(r, 5));
      return sockets[n];
    },
    /** Resolves with the first message of `conn` (from index `from`) that satisfies `pred`. */
    async message(conn, pred, from = 0) {
      for (;;) {
        const found = conn.messages.slice(from).find(pred);
        if (found) return found;
        await new Promise((r) => conn.waiters.push(r));
      }
    },
    async close() {
      for (const c of wss.clients) c.terminate();
      wss.close();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Sends a server → client message. */
export function push(conn, type, data, id = null) {
  conn.ws.send(JSON.stringify({ type, data, id, timestamp: new Date().toISOString() }));
}
