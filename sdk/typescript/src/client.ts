import { HttpClient, type FetchLike } from './http.js';
import { AuthAPI } from './resources/auth.js';
import { ImagesAPI } from './resources/images.js';
import { OperationsAPI } from './resources/operations.js';
import { SystemAPI } from './resources/system.js';
import { UsersAPI } from './resources/users.js';
import { VMsAPI } from './resources/vms.js';
import { ConsoleSession } from './ws/console.js';
import { EventsAPI } from './ws/events.js';
import { ManagedSocket, type ReconnectOptions, type SocketOptions, type WebSocketConstructor } from './ws/socket.js';

export interface VoidVMClientOptions {
  /** e.g. `http://localhost:3000/api/v1`. */
  baseURL: string;
  /** JWT from login or a personal API token (`vvm_…`). */
  token?: string;
  /** Custom fetch (default: the global one). */
  fetch?: FetchLike;
  /** Per-request timeout in ms (default 60000; 0 disables). */
  timeoutMs?: number;
  /**
   * Retry after 429 honouring `Retry-After`: `true` (default) = up to 3 retries, a number =
   * that many retries, `false` = never.
   */
  retryOnRateLimit?: boolean | number;
  /** Longest `Retry-After` (ms) waited for before giving up (default 60000). */
  maxRetryDelayMs?: number;
  /** Headers added to every request. */
  headers?: Record<string, string>;
  /** WebSocket endpoint (default: derived from `baseURL`, e.g. `ws://localhost:3000/ws`). */
  wsURL?: string;
  /** WebSocket implementation (default: global `WebSocket`, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect policy of event and console sockets. */
  reconnect?: ReconnectOptions;
}

/** `http://h:3000/api/v1` → `ws://h:3000/ws` (https → wss; a proxy prefix before `/api/v1` is kept). */
export function deriveWsURL(baseURL: string): string {
  const url = new URL(baseURL);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const prefix = url.pathname.replace(/\/+$/, '').replace(/\/api\/v\d+$/, '');
  url.pathname = `${prefix}/ws`;
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** Client of the VoidVM API v1. */
export class VoidVMClient {
  readonly vms: VMsAPI;
  readonly images: ImagesAPI;
  readonly operations: OperationsAPI;
  readonly users: UsersAPI;
  readonly system: SystemAPI;
  readonly auth: AuthAPI;
  readonly events: EventsAPI;
  readonly baseURL: string;

  private currentToken: string | undefined;
  private refreshToken: string | undefined;
  private readonly options: VoidVMClientOptions;

  constructor(options: VoidVMClientOptions) {
    if (!options?.baseURL) throw new TypeError('VoidVMClient: baseURL is required');
    this.options = options;
    this.baseURL = options.baseURL.replace(/\/+$/, '');
    this.currentToken = options.token;
    const retry = options.retryOnRateLimit ?? true;
    const http = new HttpClient({
      baseURL: this.baseURL,
      token: () => this.currentToken,
      fetch: options.fetch,
      timeoutMs: options.timeoutMs ?? 60_000,
      retry: {
        maxRetries: retry === true ? 3 : retry === false ? 0 : Math.max(0, retry),
        maxDelayMs: options.maxRetryDelayMs ?? 60_000,
      },
      headers: options.headers ?? {},
    });
    this.vms = new VMsAPI(http);
    this.images = new ImagesAPI(http);
    this.operations = new OperationsAPI(http);
    this.users = new UsersAPI(http);
    this.system = new SystemAPI(http);
    this.auth = new AuthAPI(http, {
      getRefreshToken: () => this.refreshToken,
      setSession: (token, refreshToken) => {
        this.currentToken = token;
        this.refreshToken = refreshToken;
      },
    });
    this.events = new EventsAPI((hooks) => this.socket(hooks));
  }

  /** Logs in with a username and password and returns a client using the new token. */
  static async login(
    baseURL: string,
    username: string,
    password: string,
    options: Omit<VoidVMClientOptions, 'baseURL' | 'token'> = {},
  ): Promise<VoidVMClient> {
    const client = new VoidVMClient({ ...options, baseURL });
    await client.auth.login(username, password);
    return client;
  }

  /** The token currently sent (after login/refresh it is the new one). */
  get token(): string | undefined {
    return this.currentToken;
  }

  setToken(token: string | undefined): void {
    this.currentToken = token;
  }

  /** The WebSocket URL with the token, e.g. `ws://localhost:3000/ws?token=…`. */
  wsURL(): string {
    const url = new URL(this.options.wsURL ?? deriveWsURL(this.baseURL));
    if (this.currentToken) url.searchParams.set('token', this.currentToken);
    return url.toString();
  }

  /** Attaches to the serial console of a VM over the WebSocket API. */
  async console(vmId: string): Promise<ConsoleSession> {
    const session = new ConsoleSession(vmId, (hooks) => this.socket(hooks));
    return session.connect();
  }

  private socket(hooks: Pick<SocketOptions, 'onOpen' | 'onMessage' | 'onFatal'>): ManagedSocket {
    return new ManagedSocket({
      url: () => this.wsURL(),
      WebSocket: this.options.WebSocket,
      reconnect: this.options.reconnect,
      ...hooks,
    });
  }
}
