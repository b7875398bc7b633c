import { VoidVMError } from '../errors.js';
import type { HttpClient, RequestOptions } from '../http.js';
import type {
  ConsoleLog,
  ConsoleTicket,
  ConsoleType,
  CreateVMRequest,
  DeleteVMOptions,
  UpdateVMRequest,
  VM,
  VMAction,
  VMActionOptions,
  VMListParams,
  VMLiveStatus,
  VMMetrics,
  VMMetricsParams,
  VMPage,
  VMStatus,
  WaitForOptions,
  WithOperation,
} from '../types.js';

const enc = encodeURIComponent;

/** `/vms`: virtual machines. */
export class VMsAPI {
  constructor(private readonly http: HttpClient) {}

  /** Every VM matching `params`, fetching all pages (from `params.page`, default 1). */
  async list(params: VMListParams = {}, opts?: RequestOptions): Promise<VM[]> {
    const all: VM[] = [];
    for await (const vm of this.iterate(params, opts)) all.push(vm);
    return all;
  }

  /** Iterates over every VM matching `params`, one page request at a time. */
  async *iterate(params: VMListParams = {}, opts?: RequestOptions): AsyncGenerator<VM, void, undefined> {
    let page = params.page ?? 1;
    const limit = params.limit ?? 100;
    for (;;) {
      const res = await this.listPage({ ...params, page, limit }, opts);
      yield* res.vms;
      if (res.vms.length === 0 || page >= res.pagination.pages) return;
      page++;
    }
  }

  /** One page: `{vms, pagination}`. */
  listPage(params: VMListParams = {}, opts?: RequestOptions): Promise<VMPage> {
    return this.http.request<VMPage>({ method: 'GET', path: '/vms', query: { ...params }, ...opts });
  }

  get(id: string, opts?: RequestOptions): Promise<VM> {
    return this.http.request<VM>({ method: 'GET', path: `/vms/${enc(id)}`, ...opts });
  }

  create(body: CreateVMRequest, opts?: RequestOptions): Promise<VM> {
    return this.http.request<VM>({ method: 'POST', path: '/vms', body, ...opts });
  }

  /** Partial update (PATCH). Hardware changes need the VM stopped (409 otherwise). */
  update(id: string, body: UpdateVMRequest, opts?: RequestOptions): Promise<VM> {
    return this.http.request<VM>({ method: 'PATCH', path: `/vms/${enc(id)}`, body, ...opts });
  }

  /** Full update (PUT); same fields as `update`. */
  replace(id: string, body: UpdateVMRequest, opts?: RequestOptions): Promise<VM> {
    return this.http.request<VM>({ method: 'PUT', path: `/vms/${enc(id)}`, body, ...opts });
  }

  async delete(id: string, options: DeleteVMOptions = {}, opts?: RequestOptions): Promise<void> {
    const query = options.force ? { force: true } : undefined;
    await this.http.request<unknown>({ method: 'DELETE', path: `/vms/${enc(id)}`, query, ...opts });
  }

  /**
   * Runs a lifecycle action; resolves with the VM once the target state is reached. With
   * `wait: false` it resolves at once (202) with the VM as the action left it under way and its
   * `operation`, for `client.operations.wait(vm.operation)`.
   */
  action(
    id: string,
    action: VMAction,
    options?: VMActionOptions,
    opts?: RequestOptions,
  ): Promise<WithOperation<VM>> {
    // Let the HTTP timeout outlast the server-side wait.
    const timeoutMs =
      opts?.timeoutMs ?? (options?.timeout !== undefined ? (options.timeout + 30) * 1000 : undefined);
    return this.http.requestAccepted<VM>({
      method: 'POST',
      path: `/vms/${enc(id)}/${action}`,
      body: options,
      ...opts,
      timeoutMs: timeoutMs === undefined ? undefined : Math.max(timeoutMs, 0),
    });
  }

  start(id: string, options?: VMActionOptions, opts?: RequestOptions): Promise<WithOperation<VM>> {
    return this.action(id, 'start', options, opts);
  }

  stop(id: string, options?: VMActionOptions, opts?: RequestOptions): Promise<WithOperation<VM>> {
    return this.action(id, 'stop', options, opts);
  }

  restart(id: string, options?: VMActionOptions, opts?: RequestOptions): Promise<WithOperation<VM>> {
    return this.action(id, 'restart', options, opts);
  }

  pause(id: string, options?: VMActionOptions, opts?: RequestOptions): Promise<WithOperation<VM>> {
    return this.action(id, 'pause', options, opts);
  }

  resume(id: string, options?: VMActionOptions, opts?: RequestOptions): Promise<WithOperation<VM>> {
    return this.action(id, 'resume', options, opts);
  }

  reset(id: string, options?: VMActionOptions, opts?: RequestOptions): Promise<WithOperation<VM>> {
    return this.action(id, 'reset', options, opts);
  }

  /** Live status from the hypervisor. */
  status(id: string, opts?: RequestOptions): Promise<VMLiveStatus> {
    return this.http.request<VMLiveStatus>({ method: 'GET', path: `/vms/${enc(id)}/status`, ...opts });
  }

  metrics(id: string, params: VMMetricsParams = {}, opts?: RequestOptions): Promise<VMMetrics> {
    return this.http.request<VMMetrics>({
      method: 'GET',
      path: `/vms/${enc(id)}/metrics`,
      query: { ...params },
      ...opts,
    });
  }

  /** The saved serial output; `tail` limits it to the last N bytes. */
  consoleLog(id: string, params: { tail?: number } = {}, opts?: RequestOptions): Promise<ConsoleLog> {
    return this.http.request<ConsoleLog>({
      method: 'GET',
      path: `/vms/${enc(id)}/console/log`,
      query: { ...params },
      ...opts,
    });
  }

  /** A short-lived, single-use ticket for the raw serial or VNC stream. */
  consoleTicket(id: string, type: ConsoleType = 'serial', opts?: RequestOptions): Promise<ConsoleTicket> {
    return this.http.request<ConsoleTicket>({
      method: 'POST',
      path: `/vms/${enc(id)}/console`,
      body: { type },
      ...opts,
    });
  }

  /**
   * Polls `GET /vms/{id}` until the VM reaches `status` (or one of several). Throws
   * `VoidVMError` with code `WAIT_TIMEOUT` on timeout, or `VM_ERROR` if the VM enters `error`
   * while another status is awaited.
   */
  async waitFor(id: string, status: VMStatus | VMStatus[], options: WaitForOptions = {}): Promise<VM> {
    const wanted = Array.isArray(status) ? status : [status];
    const timeoutMs = options.timeoutMs ?? 120_000;
    const intervalMs = options.intervalMs ?? 1000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const vm = await this.get(id);
      if (wanted.includes(vm.status)) return vm;
      if (vm.status === 'error') {
        throw new VoidVMError({
          code: 'VM_ERROR',
          message: `VM ${id} entered status "error"${vm.status_reason ? `: ${vm.status_reason}` : ''}`,
          details: vm,
        });
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VoidVMError({
          code: 'WAIT_TIMEOUT',
          message: `VM ${id} did not reach ${wanted.join('|')} within ${timeoutMs} ms (last: ${vm.status})`,
          details: vm,
        });
      }
      await new Promise((r) => setTimeout(r, Math.min(intervalMs, left)));
    }
  }
}
