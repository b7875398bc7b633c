import { errorFromOperation, VoidVMError } from '../errors.js';
import type { HttpClient, RequestOptions } from '../http.js';
import type { Operation, OperationList, OperationListParams, OperationStatus, OperationWaitOptions } from '../types.js';

const enc = encodeURIComponent;

/** The statuses an operation ends in; it never changes again after one of them. */
const FINISHED: ReadonlySet<OperationStatus> = new Set<OperationStatus>(['succeeded', 'failed', 'cancelled']);
/** The server holds a long poll at most this long (`GET /operations/{id}/wait?timeout=`). */
const MAX_POLL_SECONDS = 60;
/** What an HTTP request of a long poll may take beyond the poll itself. */
const POLL_MARGIN_MS = 30_000;

/** `/operations`: long work (image pulls and imports, `wait: false` VM actions) to read, wait on, cancel. */
export class OperationsAPI {
  constructor(private readonly http: HttpClient) {}

  /**
   * Every operation matching `params`, newest first, fetching all pages (from `params.page`,
   * default 1). Your own operations; an admin's are everyone's.
   */
  async list(params: OperationListParams = {}, opts?: RequestOptions): Promise<Operation[]> {
    const all: Operation[] = [];
    for await (const op of this.iterate(params, opts)) all.push(op);
    return all;
  }

  /** Iterates over every operation matching `params`, one page request at a time. */
  async *iterate(
    params: OperationListParams = {},
    opts?: RequestOptions,
  ): AsyncGenerator<Operation, void, undefined> {
    let page = params.page ?? 1;
    const limit = params.limit ?? 100;
    for (;;) {
      const res = await this.listPage({ ...params, page, limit }, opts);
      yield* res.operations;
      if (res.operations.length === 0 || page >= res.pagination.pages) return;
      page++;
    }
  }

  /** One page: `{operations, pagination}`. */
  listPage(params: OperationListParams = {}, opts?: RequestOptions): Promise<OperationList> {
    return this.http.request<OperationList>({ method: 'GET', path: '/operations', query: { ...params }, ...opts });
  }

  /** 404 `OPERATION_NOT_FOUND` (`NotFoundError`) for an unknown id or another user's operation. */
  get(id: string, opts?: RequestOptions): Promise<Operation> {
    return this.http.request<Operation>({ method: 'GET', path: `/operations/${enc(id)}`, ...opts });
  }

  /**
   * Waits until the operation has finished and resolves with it, repeating the server's long poll
   * (`GET /operations/{id}/wait`). It resolves whatever the outcome: check `status` (`succeeded`,
   * `failed` with `error`, `cancelled`), or pass `throwOnFailure: true` to reject unless it
   * succeeded (`errorFromOperation`). Rejects with code `WAIT_TIMEOUT` (the operation as last
   * seen in `details`) after `timeoutMs`. Takes an id or an operation, e.g. the `operation` of a
   * `{wait: false}` call; an operation that has already finished is not fetched again.
   */
  async wait(
    operation: string | Pick<Operation, 'id'> | null | undefined,
    options: OperationWaitOptions = {},
    opts?: RequestOptions,
  ): Promise<Operation> {
    if (operation == null || (typeof operation !== 'string' && typeof operation.id !== 'string')) {
      throw new TypeError('operations.wait: no operation to wait on (only a call made with {wait: false} returns one)');
    }
    const given = typeof operation === 'string' ? undefined : (operation as Partial<Operation>);
    if (given?.status !== undefined && FINISHED.has(given.status)) return settle(given as Operation, options);
    const id = typeof operation === 'string' ? operation : operation.id;
    const timeoutMs = options.timeoutMs;
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + Math.max(0, timeoutMs);
    const pollSeconds = Math.min(MAX_POLL_SECONDS, Math.max(1, options.pollSeconds ?? 30));
    for (;;) {
      const left = Math.max(0, deadline - Date.now());
      const seconds = Math.round(Math.min(pollSeconds, left / 1000) * 1000) / 1000;
      const op = await this.http.request<Operation>({
        method: 'GET',
        path: `/operations/${enc(id)}/wait`,
        query: { timeout: seconds },
        ...opts,
        // Let the HTTP timeout outlast the server-side wait.
        timeoutMs: opts?.timeoutMs ?? seconds * 1000 + POLL_MARGIN_MS,
      });
      if (FINISHED.has(op.status)) return settle(op, options);
      if (Date.now() >= deadline) {
        throw new VoidVMError({
          code: 'WAIT_TIMEOUT',
          message: `Operation ${id} (${op.type}) did not finish within ${timeoutMs} ms (last: ${op.status})`,
          details: op,
        });
      }
    }
  }

  /**
   * Cancels a running operation and resolves with it (`cancelled`). 409 `NOT_CANCELLABLE`
   * (`ConflictError`) if it has finished or cannot be cancelled (VM actions cannot; image imports
   * and pulls can).
   */
  cancel(id: string, opts?: RequestOptions): Promise<Operation> {
    return this.http.request<Operation>({ method: 'DELETE', path: `/operations/${enc(id)}`, ...opts });
  }
}

function settle(op: Operation, options: OperationWaitOptions): Operation {
  if (options.throwOnFailure) {
    const err = errorFromOperation(op);
    if (err) throw err;
  }
  return op;
}
