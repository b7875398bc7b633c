/**
 * Every REST operation of API v1 (`"METHOD /path"`, relative to `/api/v1`, path parameters as
 * `{id}`) and the SDK method that calls it, relative to a `VoidVMClient` instance.
 * `scripts/check-openapi.mjs` compares this map with the server's OpenAPI document.
 */
export const OPERATIONS = {
  'POST /auth/login': 'auth.login',
  'POST /auth/refresh': 'auth.refresh',
  'POST /auth/logout': 'auth.logout',
  'GET /auth/me': 'auth.me',
  'PUT /auth/password': 'auth.changePassword',
  'GET /auth/tokens': 'auth.listTokens',
  'POST /auth/tokens': 'auth.createToken',
  'DELETE /auth/tokens/{id}': 'auth.revokeToken',

  'GET /vms': 'vms.list',
  'POST /vms': 'vms.create',
  'GET /vms/{id}': 'vms.get',
  'PUT /vms/{id}': 'vms.replace',
  'PATCH /vms/{id}': 'vms.update',
  'DELETE /vms/{id}': 'vms.delete',
  'POST /vms/{id}/start': 'vms.start',
  'POST /vms/{id}/stop': 'vms.stop',
  'POST /vms/{id}/restart': 'vms.restart',
  'POST /vms/{id}/pause': 'vms.pause',
  'POST /vms/{id}/resume': 'vms.resume',
  'POST /vms/{id}/reset': 'vms.reset',
  'GET /vms/{id}/status': 'vms.status',
  'GET /vms/{id}/metrics': 'vms.metrics',
  'GET /vms/{id}/console/log': 'vms.consoleLog',
  'POST /vms/{id}/console': 'vms.consoleTicket',

  'GET /images': 'images.list',
  'POST /images': 'images.create',
  'POST /images/upload': 'images.upload',
  'GET /images/{id}': 'images.get',
  'DELETE /images/{id}': 'images.delete',

  'GET /operations': 'operations.list',
  'GET /operations/{id}': 'operations.get',
  'GET /operations/{id}/wait': 'operations.wait',
  'DELETE /operations/{id}': 'operations.cancel',

  'GET /system/info': 'system.info',
  'GET /system/version': 'system.version',
  'GET /system/stats': 'system.stats',
  'GET /config': 'system.getConfig',
  'PUT /config': 'system.updateConfig',
  'GET /logs': 'system.logs',
  'GET /roles': 'system.roles',
  'GET /permissions': 'system.permissions',
  'GET /health': 'system.health',
  'GET /ready': 'system.ready',

  'GET /users': 'users.list',
  'POST /users': 'users.create',
  'GET /users/{id}': 'users.get',
  'PUT /users/{id}': 'users.update',
  'DELETE /users/{id}': 'users.delete',
} as const satisfies Record<string, string>;

export type OperationKey = keyof typeof OPERATIONS;

/** Normalises `"get /api/v1/vms/{vm_id}/"` to `"GET /vms/{id}"` (the form used as keys above). */
export function normalizeOperation(method: string, path: string): string {
  const p = path
    .replace(/^\/api\/v1(?=\/|$)/, '')
    .replace(/\{[^}]*\}/g, '{id}')
    .replace(/\/+$/, '');
  return `${method.toUpperCase()} ${p === '' ? '/' : p}`;
}
