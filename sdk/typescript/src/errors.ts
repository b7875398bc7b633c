import type { FieldError, Operation } from './types.js';

export interface VoidVMErrorInit {
  code: string;
  message: string;
  details?: unknown;
  /** HTTP status; 0 when no HTTP answer was received. */
  status?: number;
  /** The `X-Request-ID` header of the answer, when there was one. */
  requestId?: string;
  cause?: unknown;
}

/** Base class of every error the SDK throws. */
export class VoidVMError extends Error {
  readonly code: string;
  readonly details: unknown;
  readonly status: number;
  readonly requestId: string | undefined;

  constructor(init: VoidVMErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.details = init.details;
    this.status = init.status ?? 0;
    this.requestId = init.requestId;
  }
}

/** 401: missing, invalid or expired token, bad credentials. */
export class AuthenticationError extends VoidVMError {}

/** 403: the caller may not do this. */
export class PermissionDeniedError extends VoidVMError {}

/** 403 `QUOTA_EXCEEDED`. */
export class QuotaExceededError extends PermissionDeniedError {}

/** 404 (`VM_NOT_FOUND`, `USER_NOT_FOUND`, `OPERATION_NOT_FOUND`, ...). */
export class NotFoundError extends VoidVMError {}

/**
 * 409: state conflicts (`VM_ALREADY_RUNNING`, `NAME_CONFLICT`, `IMAGE_IN_USE`, `IMAGE_NOT_AVAILABLE`,
 * `NOT_CANCELLABLE`, ...).
 */
export class ConflictError extends VoidVMError {}

/** 400/413/422: bad parameters. `fields` lists `{field, reason}` for `VALIDATION_ERROR`. */
export class ValidationError extends VoidVMError {
  get fields(): FieldError[] {
    if (!Array.isArray(this.details)) return [];
    return this.details.filter(
      (d): d is FieldError => typeof d === 'object' && d !== null && 'field' in d,
    );
  }
}

/** 429. `retryAfter` is in seconds (from `Retry-After`), when the server sent it. */
export class RateLimitError extends VoidVMError {
  readonly retryAfter: number | undefined;

  constructor(init: VoidVMErrorInit & { retryAfter?: number }) {
    super(init);
    this.retryAfter = init.retryAfter;
  }
}

/** 5xx (`INTERNAL_SERVER_ERROR`, `HYPERVISOR_UNAVAILABLE`, `HYPERVISOR_TIMEOUT`, ...). */
export class ServerError extends VoidVMError {}

/** No usable HTTP answer: network failure, timeout, abort, non-JSON body, WebSocket failure. */
export class TransportError extends VoidVMError {}

/** Parses `Retry-After` (seconds or an HTTP date) into seconds. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value == null || value.trim() === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, (date - now) / 1000);
}

/** Builds the typed error for an HTTP error answer. */
export function errorFromResponse(
  status: number,
  body: { code?: string; message?: string; details?: unknown } | undefined,
  requestId: string | undefined,
  retryAfterHeader?: string | null,
): VoidVMError {
  const init: VoidVMErrorInit = {
    code: body?.code ?? `HTTP_${status}`,
    message: body?.message ?? `HTTP ${status}`,
    details: body?.details,
    status,
    requestId,
  };
  if (status === 401) return new AuthenticationError(init);
  if (status === 403) {
    return init.code === 'QUOTA_EXCEEDED' ? new QuotaExceededError(init) : new PermissionDeniedError(init);
  }
  if (status === 404) return new NotFoundError(init);
  if (status === 409) return new ConflictError(init);
  if (status === 400 || status === 413 || status === 422) return new ValidationError(init);
  if (status === 429) {
    return new RateLimitError({ ...init, retryAfter: parseRetryAfter(retryAfterHeader) });
  }
  if (status >= 500) return new ServerError(init);
  return new VoidVMError(init);
}

type ErrorClass = new (init: VoidVMErrorInit) => VoidVMError;

/**
 * The class of each error code the server answers with, for errors that come without an HTTP
 * status (a failed operation's `error`). HTTP answers are mapped by their status
 * (`errorFromResponse`); unknown codes are plain `VoidVMError`s.
 */
const CODE_CLASSES: Record<string, ErrorClass> = {
  VALIDATION_ERROR: ValidationError,
  BAD_REQUEST: ValidationError,
  INVALID_HOST: ValidationError,
  PAYLOAD_TOO_LARGE: ValidationError,
  UNAUTHORIZED: AuthenticationError,
  INVALID_TOKEN: AuthenticationError,
  TOKEN_EXPIRED: AuthenticationError,
  INVALID_CREDENTIALS: AuthenticationError,
  ACCOUNT_LOCKED: AuthenticationError,
  FORBIDDEN: PermissionDeniedError,
  ACCOUNT_DISABLED: PermissionDeniedError,
  QUOTA_EXCEEDED: QuotaExceededError,
  NOT_FOUND: NotFoundError,
  VM_NOT_FOUND: NotFoundError,
  USER_NOT_FOUND: NotFoundError,
  IMAGE_NOT_FOUND: NotFoundError,
  TOKEN_NOT_FOUND: NotFoundError,
  OPERATION_NOT_FOUND: NotFoundError,
  CONFLICT: ConflictError,
  VM_ALREADY_RUNNING: ConflictError,
  VM_NOT_RUNNING: ConflictError,
  INVALID_STATE: ConflictError,
  OPERATION_IN_PROGRESS: ConflictError,
  NAME_CONFLICT: ConflictError,
  IMAGE_IN_USE: ConflictError,
  IMAGE_NOT_AVAILABLE: ConflictError,
  NOT_CANCELLABLE: ConflictError,
  OPERATION_CANCELLED: ConflictError,
  RATE_LIMIT_EXCEEDED: RateLimitError,
  TOO_MANY_ATTEMPTS: RateLimitError,
  LOGIN_BUSY: RateLimitError,
  INTERNAL_SERVER_ERROR: ServerError,
  SERVICE_UNAVAILABLE: ServerError,
  HYPERVISOR_ERROR: ServerError,
  HYPERVISOR_UNAVAILABLE: ServerError,
  HYPERVISOR_TIMEOUT: ServerError,
  STORAGE_FULL: ServerError,
  STORAGE_READ_ONLY: ServerError,
  INSUFFICIENT_STORAGE: ServerError,
  IMAGE_PULL_FAILED: ServerError,
  /** The server stopped while the operation ran. */
  INTERRUPTED: ServerError,
};

/** Builds the typed error for an error code alone (no HTTP status: `status` is 0). */
export function errorFromCode(code: string, message: string, details?: unknown): VoidVMError {
  const cls = Object.hasOwn(CODE_CLASSES, code) ? CODE_CLASSES[code] : VoidVMError;
  return new cls({ code, message, details });
}

/**
 * The error a finished, unsuccessful operation stands for, with the operation as `details`: a
 * failed one maps its `error.code` as `errorFromCode` does (e.g. `HYPERVISOR_TIMEOUT` →
 * `ServerError`), a cancelled one a `ConflictError` with code `OPERATION_CANCELLED`. `undefined`
 * for an operation that succeeded or has not finished.
 */
export function errorFromOperation(op: Operation): VoidVMError | undefined {
  if (op.status === 'failed') {
    const message = op.error?.message || op.message || `Operation ${op.id} (${op.type}) failed`;
    return errorFromCode(op.error?.code ?? 'OPERATION_FAILED', message, op);
  }
  if (op.status === 'cancelled') {
    return errorFromCode('OPERATION_CANCELLED', `Operation ${op.id} (${op.type}) was cancelled`, op);
  }
  return undefined;
}
