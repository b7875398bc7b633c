export { VoidVMClient, deriveWsURL, type VoidVMClientOptions } from './client.js';
export {
  VoidVMError,
  AuthenticationError,
  PermissionDeniedError,
  QuotaExceededError,
  NotFoundError,
  ConflictError,
  ValidationError,
  RateLimitError,
  ServerError,
  TransportError,
  errorFromResponse,
  errorFromCode,
  errorFromOperation,
  parseRetryAfter,
  type VoidVMErrorInit,
} from './errors.js';
export type { FetchLike, RequestOptions, Query, QueryValue } from './http.js';
export { OPERATIONS, normalizeOperation, type OperationKey } from './operations.js';
export { VMsAPI } from './resources/vms.js';
export { ImagesAPI } from './resources/images.js';
export { OperationsAPI } from './resources/operations.js';
export { UsersAPI } from './resources/users.js';
export { SystemAPI } from './resources/system.js';
export { AuthAPI } from './resources/auth.js';
export {
  EventsAPI,
  EventStream,
  matchesTopic,
  type Topic,
  type TopicInput,
  type EventData,
  type OperationEventData,
  type VoidVMEvent,
  type EventHandler,
  type Subscription,
} from './ws/events.js';
export { ConsoleSession, type WaitForOutputOptions } from './ws/console.js';
export type {
  WebSocketLike,
  WebSocketConstructor,
  ReconnectOptions,
  ClientMessage,
  ServerMessage,
} from './ws/socket.js';
export { SDK_VERSION } from './version.js';
export type * from './types.js';
