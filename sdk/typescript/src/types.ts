/**
 * Shapes of the VoidVM API v1 (see docs/api.md). Fields the server may add later are allowed
 * through the index signatures only where the document leaves the object open (config, info, stats).
 *
 * The property names of the resources, request bodies and list parameters below are checked
 * against the server's OpenAPI document by the server's tests/unit/test_sdk_type_drift.py (via
 * scripts/type-fields.mjs): a field added, renamed or removed on one side only fails that test.
 */

/** Success envelope: `{success: true, data, message, timestamp}`. */
export interface Envelope<T> {
  success: true;
  data: T;
  message?: string;
  timestamp?: string;
}

/**
 * A 202 answer: `data` as the finished call would hold it, plus the operation doing the work (its
 * URL, `/api/v1/operations/{id}`, is also in the `Location` header).
 */
export interface AcceptedEnvelope<T> extends Envelope<T> {
  operation: Operation;
}

/** Error envelope: `{success: false, error: {code, message, details}, timestamp}`. */
export interface ErrorEnvelope {
  success: false;
  error: ErrorBody;
  timestamp?: string;
}

export interface ErrorBody {
  code: string;
  message: string;
  details?: string | FieldError[] | null | unknown;
}

/** One item of `details` for `VALIDATION_ERROR`. */
export interface FieldError {
  field: string;
  reason: string;
}

export interface Pagination {
  page: number;
  limit: number;
  total: number;
  pages: number;
}

export interface PageParams {
  /** 1-based page number. */
  page?: number;
  /** Page size (server default 20, max 100). */
  limit?: number;
}

// ---------------------------------------------------------------------------------------------
// Users and auth

export type Role = 'admin' | 'user';
export type UserStatus = 'active' | 'disabled';

export interface Quota {
  max_vms: number;
  max_cpus: number;
  max_memory_mb: number;
  max_disk_gb: number;
}

/** What a user's VMs take up, counted against the quota. */
export interface Usage {
  vms: number;
  cpus: number;
  memory_mb: number;
  disk_gb: number;
}

export interface User {
  id: string;
  username: string;
  email: string | null;
  role: Role;
  status: UserStatus;
  quota: Quota;
  usage: Usage;
  created_at: string;
  updated_at: string;
  last_login_at: string | null;
}

export interface LoginResponse {
  token: string;
  token_type: 'Bearer' | string;
  expires_in: number;
  refresh_token: string;
  user: User;
}

export interface ApiToken {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}

/** Answer of `POST /auth/tokens`: the token's secret is shown only once. */
export interface CreatedApiToken extends ApiToken {
  token: string;
}

export interface CreateApiTokenRequest {
  name: string;
  expires_in_days?: number;
}

export interface CreateUserRequest {
  username: string;
  password: string;
  email?: string;
  role?: Role;
  quota?: Partial<Quota>;
}

/** Usernames cannot be changed. */
export interface UpdateUserRequest {
  email?: string | null;
  password?: string;
  role?: Role;
  status?: UserStatus;
  quota?: Partial<Quota>;
}

/** `GET /users` takes only the page parameters. */
export interface UserListParams extends PageParams {}

export interface UserPage {
  users: User[];
  pagination: Pagination;
}

// ---------------------------------------------------------------------------------------------
// Virtual machines

export type VMStatus =
  | 'creating'
  | 'stopped'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'paused'
  | 'rebooting'
  | 'deleting'
  | 'error';

export interface VMPorts {
  ssh?: number;
  [name: string]: number | undefined;
}

export interface VM {
  id: string;
  name: string;
  description: string;
  status: VMStatus;
  cpu: number;
  /** Memory in MB. */
  memory: number;
  /** Disk size in GB. */
  disk: number;
  /** The image name or alias the VM was created with. */
  os: string;
  /** The image's id. */
  image: string;
  /** The owner's username. */
  owner: string;
  owner_id: string;
  /** The guest's address while QEMU runs. */
  ip: string | null;
  /** Forwarded host ports; `{}` when none. */
  ports: VMPorts;
  status_reason: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
}

export interface CreateVMRequest {
  name: string;
  cpu: number;
  /** MB */
  memory: number;
  /** GB */
  disk: number;
  /** Image name or alias; the server's default image when omitted. */
  os?: string;
  description?: string;
  auto_start?: boolean;
}

export interface UpdateVMRequest {
  name?: string;
  description?: string | null;
  cpu?: number;
  memory?: number;
  /** Grow only. */
  disk?: number;
}

export interface VMListParams extends PageParams {
  status?: VMStatus;
  /** Matches name and description. */
  search?: string;
  /** `name`, `-created_at`, ... */
  sort?: string;
  /** Admins only: filter by owner. */
  owner?: string;
}

export interface VMPage {
  vms: VM[];
  pagination: Pagination;
}

/** Optional body of the lifecycle actions. */
export interface VMActionOptions {
  /** Wait for the target state (server default true). `false` answers 202 at once. */
  wait?: boolean;
  /** Stop/restart: kill instead of ACPI power-off. */
  force?: boolean;
  /** Stop/restart: seconds the guest has to answer the ACPI power button before it is killed
   * (0–3600, server default 30); 0 kills at once, as `force` does. */
  timeout?: number;
}

export type VMAction = 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'reset';

export interface DeleteVMOptions {
  /** Stop a running VM first. */
  force?: boolean;
}

export interface VMLiveStatus {
  id: string;
  status: VMStatus;
  status_reason: string | null;
  pid: number | null;
  qemu_status: string | null;
  /** Seconds since the start; 0 when not running. */
  uptime: number;
}

export interface VMMetrics {
  vm_id: string;
  status: VMStatus;
  cpu_percent: number;
  memory: { used_mb: number; total_mb: number };
  /** `allocated_bytes`: what the VM's disk file takes on the host; `null` when it is missing. */
  disk: { read_bytes: number; write_bytes: number; allocated_bytes: number | null };
  /** `null` when the hypervisor does not report network counters. */
  network: { rx_bytes: number | null; tx_bytes: number | null };
  /** Seconds. */
  uptime: number;
  timestamp: string;
}

export interface VMMetricsParams {
  from?: string;
  to?: string;
  interval?: string | number;
}

export interface ConsoleLog {
  log: string;
  size: number;
  truncated: boolean;
}

export type ConsoleType = 'serial' | 'vnc';

export interface ConsoleTicket {
  ticket: string;
  /** The WebSocket URL to open, ticket included. */
  url: string;
  /** Seconds. */
  expires_in: number;
  type: ConsoleType;
}

export interface WaitForOptions {
  /** Give up after this many ms (default 120000). */
  timeoutMs?: number;
  /** Poll interval in ms (default 1000). */
  intervalMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Images

export type ImageFormat = 'qcow2' | 'raw' | 'iso' | 'kernel';
export type ImageStatus = 'available' | 'downloading' | 'error';

export interface Image {
  id: string;
  name: string;
  aliases: string[];
  format: ImageFormat;
  status: ImageStatus;
  size_bytes: number;
  virtual_size_bytes: number;
  is_default: boolean;
  /** Whether its guest runs an SSH server; only then do its VMs get `ports.ssh`. */
  serves_ssh: boolean;
  source: string;
  status_reason: string | null;
  created_at: string;
}

/** JSON import: from a URL, or from a server-side path (admins). */
export interface CreateImageRequest {
  name: string;
  format: Exclude<ImageFormat, 'kernel'>;
  url?: string;
  path?: string;
  aliases?: string[];
  /** Make it the default image (used when a VM is created without `os`). */
  default?: boolean;
  /**
   * URL imports: wait for the download (server default true, answered 201). `false` answers 202
   * at once with the image (`downloading`) and its `operation` (not with `path` or `default`).
   */
  wait?: boolean;
}

/** Raw-bytes upload to POST /images/upload. */
export interface UploadImageRequest {
  name: string;
  format: Exclude<ImageFormat, 'kernel'>;
  file: Blob | Uint8Array | ArrayBuffer;
}

// ---------------------------------------------------------------------------------------------
// Operations

export type OperationStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** Why an operation failed (the code of the error the call would have answered with). */
export interface OperationError {
  code: string;
  message: string;
}

/** Long work recorded by the server: an image pull or import, a VM action called with `wait: false`. */
export interface Operation {
  /** `op-` and 12 hex digits. */
  id: string;
  /** `vm.start`, `vm.stop`, ..., `image.pull`, `image.import`. */
  type: string;
  status: OperationStatus;
  /** 0-100, or `null` when the work cannot tell. */
  progress: number | null;
  message: string;
  /** `vm` or `image`. */
  resource_type: string;
  resource_id: string;
  /** The id of the user whose operation it is (`null`: the server's own work). */
  owner: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
  /** When failed. */
  error: OperationError | null;
  /** When succeeded: `{vm_id, status}` for VM actions, `{image_id}` for image imports and pulls. */
  result: Record<string, unknown> | null;
  /** Whether `operations.cancel` can stop it (image imports and pulls while they run). */
  cancellable: boolean;
}

export interface OperationList {
  operations: Operation[];
  pagination: Pagination;
}

export interface OperationListParams extends PageParams {
  status?: OperationStatus;
  /** e.g. `vm.start` or `image.pull`. */
  type?: string;
  /** A VM or image id. */
  resource_id?: string;
}

/** What `{wait: false}` calls resolve with: the resource, and the operation finishing the work. */
export type WithOperation<T> = T & {
  /** Set when the server answered 202; pass it to `client.operations.wait`. */
  operation?: Operation;
};

export interface OperationWaitOptions {
  /** Give up after this many ms with `WAIT_TIMEOUT` (default: wait until it finishes). */
  timeoutMs?: number;
  /** Seconds each long poll (`GET /operations/{id}/wait`) may be held by the server (1-60, default 30). */
  pollSeconds?: number;
  /**
   * Reject unless the operation succeeded (default false: resolve with it whatever its outcome):
   * a failed one with the mapped `VoidVMError` subclass (`errorFromOperation`), a cancelled one
   * with code `OPERATION_CANCELLED`.
   */
  throwOnFailure?: boolean;
}

// ---------------------------------------------------------------------------------------------
// System

export interface VersionInfo {
  version: string;
  api_version: string;
  [key: string]: unknown;
}

export interface SystemInfo {
  version?: string;
  uptime?: number;
  [key: string]: unknown;
}

export type StatsPeriod = '1h' | '24h' | '7d' | '30d';

export interface SystemStats {
  [key: string]: unknown;
}

export type SystemConfig = Record<string, unknown>;

export interface RoleInfo {
  name: string;
  permissions: string[];
}

export interface PermissionInfo {
  id: string;
  description: string;
}

export interface AuditLogEntry {
  id: number;
  timestamp: string;
  /** `info` (success) or `warning` (failure). */
  level: string;
  user_id: string | null;
  username: string | null;
  client_ip: string | null;
  /** e.g. `vm.start`, `auth.login`. */
  action: string;
  /** `vm`, `user`, `image`, `config`, ... */
  target_type: string | null;
  target_id: string | null;
  /** `success` or `failure`. */
  result: string;
  message: string;
  request_id: string | null;
}

export interface AuditLogParams extends PageParams {
  level?: string;
  /** e.g. `vm.start`. */
  action?: string;
  /** Admins: a user id (others always see their own entries). */
  user?: string;
  /** A VM id (entries whose target is that VM). */
  vm?: string;
  /** ISO 8601; entries at or after. */
  from?: string;
  /** ISO 8601; entries at or before. */
  to?: string;
}

export interface AuditLogPage {
  logs: AuditLogEntry[];
  pagination: Pagination;
}

export interface HealthStatus {
  status?: string;
  [key: string]: unknown;
}
