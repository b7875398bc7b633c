import { TransportError, VoidVMError } from '../errors.js';

/** The part of the WHATWG `WebSocket` the SDK uses (the global one and `ws` both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Client → server message. */
export interface ClientMessage<T = unknown> {
  type: string;
  data?: T;
  id?: string;
}

/** Server → client message. */
export interface ServerMessage<T = Record<string, unknown>> {
  type: string;
  data: T;
  id?: string | null;
  timestamp?: string;
}

export interface ReconnectOptions {
  /** Reconnect after an unexpected close (default true). */
  enabled?: boolean;
  /** First delay in ms (default 500), doubled per failed attempt. */
  initialDelayMs?: number;
  /** Longest delay in ms (default 10000). */
  maxDelayMs?: number;
  /** Consecutive failed attempts before giving up (default Infinity). */
  maxAttempts?: number;
}

export interface SocketOptions {
  url: () => string;
  WebSocket?: WebSocketConstructor;
  reconnect?: ReconnectOptions;
  /** Called on every (re)connection, before queued messages are flushed. */
  onOpen: (reconnected: boolean) => void;
  onMessage: (msg: ServerMessage) => void;
  /** Called once when the socket is gone for good (not after `close()`). */
  onFatal: (err: VoidVMError) => void;
}

/** Close codes after which reconnecting is pointless (policy / auth failures). */
const FATAL_CLOSE_CODES = new Set([1008, 4001, 4003, 4401, 4403]);
const OPEN = 1;

let wsModule: Promise<WebSocketConstructor> | undefined;

/** The global `WebSocket` when present (Node 22+, browsers, Deno, Bun), else the `ws` package. */
export function resolveWebSocket(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return Promise.resolve(global);
  wsModule ??= import('ws').then((mod) => {
    const m = mod as unknown as { default?: unknown; WebSocket?: unknown };
    return (m.WebSocket ?? m.default ?? mod) as WebSocketConstructor;
  });
  return wsModule;
}

function decode(data: unknown): string {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    const view = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return new TextDecoder().decode(view);
  }
  if (Array.isArray(data)) return data.map(decode).join('');
  return String(data);
}

/** A JSON WebSocket that queues while disconnected and reconnects with exponential backoff. */
export class ManagedSocket {
  private ws: WebSocketLike | undefined;
  private queue: string[] = [];
  private closed = false;
  private everOpened = false;
  private attempts = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private connecting: Promise<void> | undefined;

  constructor(private readonly opts: SocketOptions) {}

  get isOpen(): boolean {
    return this.ws?.readyState === OPEN;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Resolves once the first connection is open; rejects if it cannot be established. */
  connect(): Promise<void> {
    this.connecting ??= this.open(false).catch((err: unknown) => {
      this.closed = true;
      throw err;
    });
    return this.connecting;
  }

  /** Sends now if open, else queues until the next (re)connection. */
  send(msg: ClientMessage): void {
    if (this.closed) throw new TransportError({ code: 'SOCKET_CLOSED', message: 'WebSocket is closed' });
    const text = JSON.stringify(msg);
    if (this.ws && this.ws.readyState === OPEN) this.ws.send(text);
    else this.queue.push(text);
  }

  /** Closes for good (no reconnect). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.queue = [];
    const ws = this.ws;
    this.ws = undefined;
    if (ws && ws.readyState <= OPEN) ws.close(1000, 'client closed');
  }

  private async open(reconnected: boolean): Promise<void> {
    let Impl: WebSocketConstructor;
    try {
      Impl = this.opts.WebSocket ?? (await resolveWebSocket());
    } catch (err) {
      throw new TransportError({ code: 'NO_WEBSOCKET', message: 'No WebSocket implementation (install "ws")', cause: err });
    }
    if (this.closed) throw new TransportError({ code: 'SOCKET_CLOSED', message: 'WebSocket is closed' });
    return new Promise<void>((resolve, reject) => {
      let opened = false;
      let ws: WebSocketLike;
      try {
        ws = new Impl(this.opts.url());
      } catch (err) {
        reject(new TransportError({ code: 'WS_CONNECT_FAILED', message: String(err), cause: err }));
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        this.everOpened = true;
        this.attempts = 0;
        this.opts.onOpen(reconnected);
        const queued = this.queue;
        this.queue = [];
        for (const text of queued) ws.send(text);
        resolve();
      };
      ws.onmessage = (ev) => {
        let msg: unknown;
        try {
          msg = JSON.parse(decode(ev.data));
        } catch {
          return;
        }
        if (typeof msg === 'object' && msg !== null && typeof (msg as ServerMessage).type === 'string') {
          this.opts.onMessage(msg as ServerMessage);
        }
      };
      ws.onerror = () => {
        /* the close event follows and carries the decision */
      };
      ws.onclose = (ev) => {
        if (this.ws === ws) this.ws = undefined;
        if (this.closed) return;
        const err = new TransportError({
          code: FATAL_CLOSE_CODES.has(ev.code) ? 'WS_REJECTED' : 'WS_CLOSED',
          message: `WebSocket closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`,
          details: { code: ev.code, reason: ev.reason },
        });
        if (!this.everOpened) {
          this.closed = true;
          reject(err);
          return;
        }
        if (!opened && reconnected) {
          // A failed reconnection attempt: keep trying (scheduleReconnect counts attempts).
          this.scheduleReconnect(err);
          return;
        }
        if (FATAL_CLOSE_CODES.has(ev.code)) return this.fail(err);
        this.scheduleReconnect(err);
      };
    });
  }

  private scheduleReconnect(lastError: VoidVMError): void {
    const r = this.opts.reconnect ?? {};
    if (r.enabled === false || this.attempts >= (r.maxAttempts ?? Infinity)) return this.fail(lastError);
    const base = r.initialDelayMs ?? 500;
    const delay = Math.min(r.maxDelayMs ?? 10_000, base * 2 ** this.attempts);
    this.attempts++;
    this.timer = setTimeout(() => {
      this.open(true).catch((err: unknown) => {
        if (!this.closed) this.scheduleReconnect(err instanceof VoidVMError ? err : lastError);
      });
    }, delay);
  }

  private fail(err: VoidVMError): void {
    this.closed = true;
    this.queue = [];
    this.opts.onFatal(err);
  }
}
