import type { HttpClient, RequestOptions } from '../http.js';
import type {
  AuditLogPage,
  AuditLogParams,
  HealthStatus,
  PermissionInfo,
  RoleInfo,
  StatsPeriod,
  SystemConfig,
  SystemInfo,
  SystemStats,
  VersionInfo,
} from '../types.js';

/** `/system/*`, `/config`, `/logs`, `/roles`, `/permissions`, `/health`, `/ready`. */
export class SystemAPI {
  constructor(private readonly http: HttpClient) {}

  /** Any user. */
  info(opts?: RequestOptions): Promise<SystemInfo> {
    return this.http.request<SystemInfo>({ method: 'GET', path: '/system/info', ...opts });
  }

  /** Any user: `{version, api_version}`. */
  version(opts?: RequestOptions): Promise<VersionInfo> {
    return this.http.request<VersionInfo>({ method: 'GET', path: '/system/version', ...opts });
  }

  stats(params: { period?: StatsPeriod } = {}, opts?: RequestOptions): Promise<SystemStats> {
    return this.http.request<SystemStats>({ method: 'GET', path: '/system/stats', query: { ...params }, ...opts });
  }

  getConfig(opts?: RequestOptions): Promise<SystemConfig> {
    return this.http.request<SystemConfig>({ method: 'GET', path: '/config', ...opts });
  }

  /** Deep-merged partial update; answers the resulting configuration. */
  updateConfig(patch: SystemConfig, opts?: RequestOptions): Promise<SystemConfig> {
    return this.http.request<SystemConfig>({ method: 'PUT', path: '/config', body: patch, ...opts });
  }

  /** One page of the audit log. */
  logs(params: AuditLogParams = {}, opts?: RequestOptions): Promise<AuditLogPage> {
    return this.http.request<AuditLogPage>({ method: 'GET', path: '/logs', query: { ...params }, ...opts });
  }

  async roles(opts?: RequestOptions): Promise<RoleInfo[]> {
    const data = await this.http.request<{ roles: RoleInfo[] }>({ method: 'GET', path: '/roles', ...opts });
    return data.roles;
  }

  async permissions(opts?: RequestOptions): Promise<PermissionInfo[]> {
    const data = await this.http.request<{ permissions: PermissionInfo[] }>({
      method: 'GET',
      path: '/permissions',
      ...opts,
    });
    return data.permissions;
  }

  /** Liveness; no auth. */
  health(opts?: RequestOptions): Promise<HealthStatus> {
    return this.http.request<HealthStatus>({ method: 'GET', path: '/health', auth: false, ...opts });
  }

  /** Readiness (database and hypervisor reachable); no auth. Throws `ServerError` (503) when not ready. */
  ready(opts?: RequestOptions): Promise<HealthStatus> {
    return this.http.request<HealthStatus>({ method: 'GET', path: '/ready', auth: false, ...opts });
  }
}
