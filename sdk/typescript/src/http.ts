import { errorFromResponse, RateLimitError, TransportError } from './errors.js';
import type { WithOperation } from './types.js';

export type FetchLike = typeof globalThis.fetch;

export type QueryValue = string | number | boolean | null | undefined;
export type Query = Record<string, QueryValue>;

/** Per-call options accepted by every SDK method that talks HTTP. */
export interface RequestOptions {
  /** Abort the call. */
  signal?: AbortSignal;
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number;
  /** Extra headers (e.g. `X-Request-ID`). */
  headers?: Record<string, string>;
}

export interface HttpRequest extends RequestOptions {
  method: string;
  path: string;
  query?: Query;
  /** JSON-serialisable body, or FormData / Blob (sent as raw bytes) for uploads. */
  body?: unknown;
  /** Send the bearer token (default true). */
  auth?: boolean;
}

export interface RetryPolicy {
  /** Retries after a 429 (0 disables). */
  maxRetries: number;
  /** Longest wait honoured; a longer `Retry-After` is thrown to the caller at once. */
  maxDelayMs: number;
}

export interface HttpConfig {
  baseURL: string;
  token: () => string | undefined;
  fetch?: FetchLike;
  timeoutMs: number;
  retry: RetryPolicy;
  headers: Record<string, string>;
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

export function buildURL(baseURL: string, path: string, query?: Query): string {
  const url = new URL(baseURL.replace(/\/+$/, '') + path);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined || value === null) continue;
    url.searchParams.set(key, String(value));
  }
  return url.toString();
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Sends requests, unwraps the `{success, data}` envelope and maps errors to typed classes. */
export class HttpClient {
  constructor(private readonly config: HttpConfig) {}

  get baseURL(): string {
    return this.config.baseURL;
  }

  /** Returns `data` of the envelope (or the raw JSON body when it is not an envelope). */
  async request<T>(req: HttpRequest): Promise<T> {
    const body = await this.requestRaw(req);
    if (isObject(body) && body.success === true && 'data' in body) return body.data as T;
    return body as T;
  }

  /**
   * Like `request`, for calls that may answer 202: the envelope's `operation` (the work still
   * under way) is set on the returned object as `operation`.
   */
  async requestAccepted<T>(req: HttpRequest): Promise<WithOperation<T>> {
    const body = await this.requestRaw(req);
    if (!(isObject(body) && body.success === true && 'data' in body)) return body as WithOperation<T>;
    const { data, operation } = body as { data: unknown; operation?: unknown };
    if (isObject(data) && isObject(operation)) return { ...data, operation } as WithOperation<T>;
    return data as WithOperation<T>;
  }

  /** Returns the whole decoded JSON body (envelope included) of a successful answer. */
  async requestRaw(req: HttpRequest): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(req);
      } catch (err) {
        if (!(err instanceof RateLimitError) || attempt >= this.config.retry.maxRetries) throw err;
        const delayMs = err.retryAfter !== undefined ? err.retryAfter * 1000 : 1000 * 2 ** attempt;
        if (delayMs > this.config.retry.maxDelayMs) throw err;
        await sleep(delayMs, req.signal);
      }
    }
  }

  private async once(req: HttpRequest): Promise<unknown> {
    const fetchImpl = this.config.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') {
      throw new TransportError({ code: 'NO_FETCH', message: 'No fetch implementation available; pass options.fetch' });
    }
    const headers: Record<string, string> = { Accept: 'application/json', ...this.config.headers, ...req.headers };
    const token = this.config.token();
    if (req.auth !== false && token) headers.Authorization = `Bearer ${token}`;
    let payload: string | FormData | Blob | undefined;
    if (req.body instanceof FormData) {
      payload = req.body;
    } else if (req.body instanceof Blob) {
      payload = req.body;
      headers['Content-Type'] = 'application/octet-stream';
    } else if (req.body !== undefined) {
      payload = JSON.stringify(req.body);
      headers['Content-Type'] = 'application/json';
    }

    const timeoutMs = req.timeoutMs ?? this.config.timeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = timeoutMs > 0 ? setTimeout(() => ((timedOut = true), controller.abort()), timeoutMs) : undefined;
    const onAbort = (): void => controller.abort(req.signal?.reason);
    if (req.signal?.aborted) onAbort();
    req.signal?.addEventListener('abort', onAbort, { once: true });

    const url = buildURL(this.config.baseURL, req.path, req.query);
    let response: Response;
    let text: string;
    try {
      response = await fetchImpl.call(globalThis, url, {
        method: req.method,
        headers,
        body: payload,
        signal: controller.signal,
      });
      text = await response.text();
    } catch (err) {
      const code = timedOut ? 'TIMEOUT' : req.signal?.aborted ? 'ABORTED' : 'NETWORK_ERROR';
      const message = timedOut
        ? `${req.method} ${url} timed out after ${timeoutMs} ms`
        : `${req.method} ${url} failed: ${err instanceof Error ? err.message : String(err)}`;
      throw new TransportError({ code, message, cause: err });
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
    }

    const requestId = response.headers.get('x-request-id') ?? undefined;
    let json: unknown = undefined;
    let parsed = text.trim() === '';
    if (!parsed) {
      try {
        json = JSON.parse(text);
        parsed = true;
      } catch {
        parsed = false;
      }
    }

    if (!response.ok || (isObject(json) && json.success === false)) {
      const errBody = isObject(json) && isObject(json.error) ? json.error : undefined;
      const fallback = parsed ? undefined : text.slice(0, 200);
      throw errorFromResponse(
        response.status,
        {
          code: typeof errBody?.code === 'string' ? errBody.code : undefined,
          message: typeof errBody?.message === 'string' ? errBody.message : fallback || response.statusText || undefined,
          details: errBody?.details,
        },
        requestId,
        response.headers.get('retry-after'),
      );
    }
    if (!parsed) {
      throw new TransportError({
        code: 'INVALID_RESPONSE',
        message: `${req.method} ${url} answered ${response.status} with a body that is not JSON`,
        status: response.status,
        requestId,
        details: text.slice(0, 200),
      });
    }
    return json;
  }
}
