// HTTP behaviour of the built ESM package against a fake server.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import {
  AuthenticationError,
  ConflictError,
  NotFoundError,
  PermissionDeniedError,
  QuotaExceededError,
  RateLimitError,
  ServerError,
  TransportError,
  ValidationError,
  VoidVMClient,
  VoidVMError,
  deriveWsURL,
  errorFromCode,
  errorFromOperation,
} from '@void-vm/sdk';
import { fail, ok, startServer, vm } from './helpers/server.mjs';

let server;
let routes; // "METHOD /path" -> (req) => answer
const client = () => new VoidVMClient({ baseURL: server.baseURL, token: 'your-jwt-token' });
const last = () => server.requests.at(-1);

before(async () => {
  server = await startServer((req) => {
    const handler = routes[`${req.method} ${req.path.replace(/^\/api\/v1/, '')}`];
    return handler?.(req);
  });
});
after(() => server.close());
beforeEach(() => {
  routes = {};
  server.requests.length = 0;
});

describe('the seed snippet', () => {
  test('list, create, start send the documented requests and unwrap the envelope', async () => {
    routes['GET /vms'] = () => ok({ vms: [vm('vm-1')], pagination: { page: 1, limit: 100, total: 1, pages: 1 } });
    routes['POST /vms'] = (req) => ok(vm('vm-new', req.body), 201);
    routes['POST /vms/vm-new/start'] = () => ok(vm('vm-new', { status: 'running' }));

    const c = new VoidVMClient({ baseURL: server.baseURL, token: 'your-jwt-token' });
    const vms = await c.vms.list();
    assert.deepEqual(vms.map((v) => v.id), ['vm-1']);
    const newVm = await c.vms.create({ name: 'my-vm', cpu: 2, memory: 2048, disk: 20 });
    assert.equal(newVm.id, 'vm-new');
    const started = await c.vms.start(newVm.id);
    assert.equal(started.status, 'running');
    assert.ok(!('operation' in started), 'a finished action has no operation');

    const [list, create, start] = server.requests;
    assert.equal(list.method, 'GET');
    assert.equal(list.path, '/api/v1/vms');
    assert.equal(list.headers.authorization, 'Bearer your-jwt-token');
    assert.equal(list.headers.accept, 'application/json');
    assert.equal(create.method, 'POST');
    assert.equal(create.headers['content-type'], 'application/json');
    assert.deepEqual(create.body, { name: 'my-vm', cpu: 2, memory: 2048, disk: 20 });
    assert.equal(start.path, '/api/v1/vms/vm-new/start');
    assert.equal(start.raw, '', 'no body when no options are given');
  });
});

describe('vms', () => {
  test('list() fetches every page; listPage() returns one page with pagination', async () => {
    routes['GET /vms'] = (req) => {
      const page = Number(req.query.page);
      const ids = page === 1 ? ['vm-1', 'vm-2'] : page === 2 ? ['vm-3'] : [];
      return ok({ vms: ids.map((id) => vm(id)), pagination: { page, limit: 2, total: 3, pages: 2 } });
    };
    const all = await client().vms.list({ limit: 2, status: 'running' });
    assert.deepEqual(all.map((v) => v.id), ['vm-1', 'vm-2', 'vm-3']);
    assert.deepEqual(server.requests.map((r) => r.query), [
      { status: 'running', page: '1', limit: '2' },
      { status: 'running', page: '2', limit: '2' },
    ]);
    const page = await client().vms.listPage({ page: 2, limit: 2 });
    assert.deepEqual(page.pagination, { page: 2, limit: 2, total: 3, pages: 2 });
    assert.equal(page.vms.length, 1);
  });

  test('get, update, delete(force), actions with options, status, metrics, console', async () => {
    routes['GET /vms/vm-1'] = () => ok(vm('vm-1'));
    routes['PATCH /vms/vm-1'] = (req) => ok(vm('vm-1', req.body));
    routes['DELETE /vms/vm-1'] = () => ok(null);
    routes['POST /vms/vm-1/stop'] = () => ok(vm('vm-1', { status: 'stopping' }), 202);
    routes['GET /vms/vm-1/status'] = () => ok({ id: 'vm-1', status: 'running', pid: 42 });
    routes['GET /vms/vm-1/metrics'] = () => ok({ vm_id: 'vm-1', cpu_percent: 3.5 });
    routes['GET /vms/vm-1/console/log'] = () => ok({ log: 'boot', size: 4, truncated: false });
    routes['POST /vms/vm-1/console'] = (req) => ok({ ticket: 't', url: `/x?type=${req.body.type}`, expires_in: 30 });
    const c = client();

    assert.equal((await c.vms.get('vm-1')).id, 'vm-1');
    assert.equal((await c.vms.update('vm-1', { description: 'd', cpu: 4 })).cpu, 4);
    assert.deepEqual(last().body, { description: 'd', cpu: 4 });
    assert.equal(await c.vms.delete('vm-1', { force: true }), undefined);
    assert.deepEqual(last().query, { force: 'true' });
    await c.vms.delete('vm-1');
    assert.deepEqual(last().query, {});
    assert.equal((await c.vms.stop('vm-1', { wait: false, force: true, timeout: 5 })).status, 'stopping');
    assert.deepEqual(last().body, { wait: false, force: true, timeout: 5 });
    assert.equal((await c.vms.status('vm-1')).pid, 42);
    assert.equal((await c.vms.metrics('vm-1')).cpu_percent, 3.5);
    assert.equal((await c.vms.consoleLog('vm-1', { tail: 100 })).log, 'boot');
    assert.deepEqual(last().query, { tail: '100' });
    assert.equal((await c.vms.consoleTicket('vm-1', 'vnc')).url, '/x?type=vnc');
  });

  test('waitFor polls until the status is reached, and times out with WAIT_TIMEOUT', async () => {
    let n = 0;
    routes['GET /vms/vm-1'] = () => ok(vm('vm-1', { status: ++n >= 3 ? 'running' : 'starting' }));
    const got = await client().vms.waitFor('vm-1', 'running', { intervalMs: 5, timeoutMs: 2000 });
    assert.equal(got.status, 'running');
    assert.equal(n, 3);
    routes['GET /vms/vm-1'] = () => ok(vm('vm-1', { status: 'starting' }));
    await assert.rejects(client().vms.waitFor('vm-1', ['running', 'paused'], { intervalMs: 5, timeoutMs: 30 }), {
      code: 'WAIT_TIMEOUT',
    });
    routes['GET /vms/vm-1'] = () => ok(vm('vm-1', { status: 'error', status_reason: 'qemu died' }));
    await assert.rejects(client().vms.waitFor('vm-1', 'running'), { code: 'VM_ERROR', message: /qemu died/ });
  });
});

const operation = (id, extra = {}) => ({
  id,
  type: 'vm.start',
  status: 'running',
  progress: null,
  message: '',
  resource_type: 'vm',
  resource_id: 'vm-1',
  owner: 'usr-1',
  created_at: '2024-01-01T12:00:00Z',
  updated_at: '2024-01-01T12:00:00Z',
  finished_at: null,
  error: null,
  result: null,
  cancellable: false,
  ...extra,
});
const done = (id, extra = {}) =>
  operation(id, { status: 'succeeded', progress: 100, finished_at: '2024-01-01T12:00:05Z', ...extra });
/** A 202 answer as the server sends it: `data`, the `operation` beside it, and `Location`. */
const accepted = (data, op) => {
  const answer = ok(data, 202, { Location: `/api/v1/operations/${op.id}` });
  return { ...answer, body: { ...answer.body, operation: op } };
};

describe('operations', () => {
  test('{wait: false} returns the VM with its operation; wait() repeats the long poll until it finishes', async () => {
    const op = operation('op-1a2b3c4d5e6f');
    routes['POST /vms/vm-1/start'] = () => accepted(vm('vm-1', { status: 'starting' }), op);
    let polls = 0;
    routes['GET /operations/op-1a2b3c4d5e6f/wait'] = () =>
      ok(++polls < 3 ? op : done(op.id, { result: { vm_id: 'vm-1', status: 'running' } }));
    const c = client();

    const starting = await c.vms.start('vm-1', { wait: false });
    assert.deepEqual(last().body, { wait: false });
    assert.equal(starting.status, 'starting');
    assert.equal(starting.id, 'vm-1');
    assert.deepEqual(starting.operation, op);

    const finished = await c.operations.wait(starting.operation);
    assert.equal(finished.status, 'succeeded');
    assert.deepEqual(finished.result, { vm_id: 'vm-1', status: 'running' });
    assert.equal(polls, 3);
    const waits = server.requests.filter((r) => r.path.endsWith('/wait'));
    assert.deepEqual(waits.map((r) => [r.method, r.query]), Array(3).fill(['GET', { timeout: '30' }]));

    // by id, with a shorter poll; an operation that has finished is not fetched again
    server.requests.length = 0;
    polls = 2;
    assert.equal((await c.operations.wait(op.id, { pollSeconds: 5 })).status, 'succeeded');
    assert.deepEqual(last().query, { timeout: '5' });
    server.requests.length = 0;
    assert.equal((await c.operations.wait(finished)).id, op.id);
    assert.equal(server.requests.length, 0);
  });

  test('images.create with {wait: false} returns the downloading image and its operation', async () => {
    const op = operation('op-000000000abc', { type: 'image.import', resource_type: 'image', resource_id: 'img-2', cancellable: true });
    const image = { id: 'img-2', name: 'deb', status: 'downloading' };
    routes['POST /images'] = (req) => (req.body.wait === false ? accepted(image, op) : ok({ ...image, status: 'available' }, 201));
    routes['GET /operations/op-000000000abc/wait'] = () => ok(done(op.id, { type: 'image.import', result: { image_id: 'img-2' } }));
    const c = client();
    const body = { name: 'deb', format: 'qcow2', url: 'https://example.org/deb.qcow2' };
    const pulling = await c.images.create({ ...body, wait: false });
    assert.equal(pulling.status, 'downloading');
    assert.equal(pulling.operation.id, op.id);
    assert.deepEqual((await c.operations.wait(pulling.operation)).result, { image_id: 'img-2' });
    const imported = await c.images.create(body);
    assert.equal(imported.status, 'available');
    assert.equal(imported.operation, undefined);
  });

  test('wait() resolves with a failed operation, or rejects with the mapped error with throwOnFailure', async () => {
    const error = { code: 'HYPERVISOR_TIMEOUT', message: 'QEMU did not answer' };
    routes['GET /operations/op-f/wait'] = () => ok(operation('op-f', { status: 'failed', error, message: error.message }));
    routes['GET /operations/op-c/wait'] = () => ok(operation('op-c', { status: 'cancelled', type: 'image.pull' }));
    const c = client();
    const failed = await c.operations.wait('op-f');
    assert.equal(failed.status, 'failed');
    assert.deepEqual(failed.error, error);

    const err = await c.operations.wait('op-f', { throwOnFailure: true }).catch((e) => e);
    assert.ok(err instanceof ServerError, String(err));
    assert.equal(err.code, 'HYPERVISOR_TIMEOUT');
    assert.equal(err.message, 'QEMU did not answer');
    assert.equal(err.status, 0);
    assert.equal(err.details.id, 'op-f');
    assert.equal((await c.operations.wait('op-c')).status, 'cancelled');
    await assert.rejects(c.operations.wait('op-c', { throwOnFailure: true }), { name: 'ConflictError', code: 'OPERATION_CANCELLED' });
  });

  test('wait() gives up after timeoutMs with WAIT_TIMEOUT; needs an operation', async () => {
    routes['GET /operations/op-1/wait'] = () => ok(operation('op-1'));
    const c = client();
    const err = await c.operations.wait('op-1', { timeoutMs: 40 }).catch((e) => e);
    assert.ok(err instanceof VoidVMError);
    assert.equal(err.code, 'WAIT_TIMEOUT');
    assert.equal(err.details.status, 'running');
    assert.ok(server.requests.every((r) => Number(r.query.timeout) <= 0.04), 'no poll outlasts the timeout');
    server.requests.length = 0;
    await assert.rejects(c.operations.wait('op-1', { timeoutMs: 0 }), { code: 'WAIT_TIMEOUT' });
    assert.deepEqual(server.requests.map((r) => r.query), [{ timeout: '0' }]);
    await assert.rejects(c.operations.wait(undefined), TypeError);
  });

  test('list (every page), listPage, get, cancel; NOT_CANCELLABLE and OPERATION_NOT_FOUND', async () => {
    routes['GET /operations'] = (req) => {
      const page = Number(req.query.page);
      const ids = page === 1 ? ['op-1', 'op-2'] : page === 2 ? ['op-3'] : [];
      return ok({ operations: ids.map((id) => operation(id)), pagination: { page, limit: 2, total: 3, pages: 2 } });
    };
    routes['GET /operations/op-1'] = () => ok(operation('op-1'));
    routes['GET /operations/op-x'] = () => fail(404, 'OPERATION_NOT_FOUND', 'Operation not found');
    routes['DELETE /operations/op-1'] = () => ok(operation('op-1', { status: 'cancelled', message: 'cancelled' }));
    routes['DELETE /operations/op-2'] = () => fail(409, 'NOT_CANCELLABLE', 'The operation cannot be cancelled');
    const c = client();

    const all = await c.operations.list({ limit: 2, status: 'running', type: 'vm.start', resource_id: 'vm-1' });
    assert.deepEqual(all.map((o) => o.id), ['op-1', 'op-2', 'op-3']);
    assert.deepEqual(server.requests[0].query, { status: 'running', type: 'vm.start', resource_id: 'vm-1', page: '1', limit: '2' });
    const page = await c.operations.listPage({ page: 2, limit: 2 });
    assert.deepEqual([page.operations.length, page.pagination.total], [1, 3]);
    assert.equal((await c.operations.get('op-1')).id, 'op-1');
    await assert.rejects(c.operations.get('op-x'), { name: 'NotFoundError', code: 'OPERATION_NOT_FOUND', status: 404 });
    assert.equal((await c.operations.cancel('op-1')).status, 'cancelled');
    assert.equal(last().method, 'DELETE');
    await assert.rejects(c.operations.cancel('op-2'), (e) => e instanceof ConflictError && e.code === 'NOT_CANCELLABLE');
  });

  test('errorFromCode and errorFromOperation map codes without an HTTP status', () => {
    assert.ok(errorFromCode('VM_ALREADY_RUNNING', 'm') instanceof ConflictError);
    assert.ok(errorFromCode('QUOTA_EXCEEDED', 'm') instanceof QuotaExceededError);
    assert.ok(errorFromCode('IMAGE_PULL_FAILED', 'm') instanceof ServerError);
    assert.ok(errorFromCode('INTERRUPTED', 'm') instanceof ServerError);
    const unknown = errorFromCode('SOMETHING_NEW', 'm', 'd');
    assert.equal(unknown.constructor, VoidVMError);
    assert.deepEqual([unknown.code, unknown.message, unknown.details, unknown.status], ['SOMETHING_NEW', 'm', 'd', 0]);
    assert.equal(errorFromCode('toString', 'm').constructor, VoidVMError);
    assert.equal(errorFromOperation(operation('op-1')), undefined);
    assert.equal(errorFromOperation(done('op-1')), undefined);
    const failed = errorFromOperation(operation('op-1', { status: 'failed', error: { code: 'VM_NOT_FOUND', message: 'gone' } }));
    assert.ok(failed instanceof NotFoundError);
    assert.equal(failed.message, 'gone');
  });
});

describe('errors', () => {
  const cases = [
    [400, 'VALIDATION_ERROR', ValidationError],
    [401, 'INVALID_TOKEN', AuthenticationError],
    [403, 'FORBIDDEN', PermissionDeniedError],
    [403, 'QUOTA_EXCEEDED', QuotaExceededError],
    [404, 'VM_NOT_FOUND', NotFoundError],
    [409, 'VM_ALREADY_RUNNING', ConflictError],
    [404, 'OPERATION_NOT_FOUND', NotFoundError],
    [409, 'NOT_CANCELLABLE', ConflictError],
    [409, 'IMAGE_NOT_AVAILABLE', ConflictError],
    [413, 'PAYLOAD_TOO_LARGE', ValidationError],
    [429, 'RATE_LIMIT_EXCEEDED', RateLimitError],
    [500, 'INTERNAL_SERVER_ERROR', ServerError],
    [503, 'HYPERVISOR_UNAVAILABLE', ServerError],
    [405, 'METHOD_NOT_ALLOWED', VoidVMError],
  ];
  for (const [status, code, cls] of cases) {
    test(`${status} ${code} → ${cls.name} with code, details, status, requestId`, async () => {
      routes['GET /vms/vm-001'] = () =>
        fail(status, code, 'msg', "Virtual machine with ID 'vm-001' was not found", { 'X-Request-ID': `rid-${code}` });
      const c = new VoidVMClient({ baseURL: server.baseURL, token: 't', retryOnRateLimit: false });
      const err = await c.vms.get('vm-001').catch((e) => e);
      assert.ok(err instanceof cls, `${err?.name} is not ${cls.name}`);
      assert.ok(err instanceof VoidVMError);
      assert.equal(err.name, cls.name);
      assert.equal(err.code, code);
      assert.equal(err.message, 'msg');
      assert.equal(err.status, status);
      assert.equal(err.details, "Virtual machine with ID 'vm-001' was not found");
      assert.equal(err.requestId, `rid-${code}`);
    });
  }

  test('QuotaExceededError is a PermissionDeniedError; ValidationError exposes fields', async () => {
    assert.ok(new QuotaExceededError({ code: 'QUOTA_EXCEEDED', message: 'q' }) instanceof PermissionDeniedError);
    routes['POST /vms'] = () => fail(400, 'VALIDATION_ERROR', 'bad', [{ field: 'cpu', reason: 'must be >= 1' }]);
    const err = await client().vms.create({ name: 'x', cpu: 0, memory: 1, disk: 1 }).catch((e) => e);
    assert.ok(err instanceof ValidationError);
    assert.deepEqual(err.fields, [{ field: 'cpu', reason: 'must be >= 1' }]);
    assert.match(err.requestId, /^req-\d+$/);
  });

  test('a non-JSON error page maps by status; a non-JSON 200 is a TransportError', async () => {
    routes['GET /vms/a'] = () => ({ status: 502, body: '<html>bad gateway</html>' });
    routes['GET /vms/b'] = () => ({ status: 200, body: '<html>hi</html>' });
    const e1 = await client().vms.get('a').catch((e) => e);
    assert.ok(e1 instanceof ServerError);
    assert.equal(e1.code, 'HTTP_502');
    assert.match(e1.requestId, /^req-/);
    const e2 = await client().vms.get('b').catch((e) => e);
    assert.ok(e2 instanceof TransportError);
    assert.equal(e2.code, 'INVALID_RESPONSE');
  });

  test('network failure and timeout are TransportErrors', async () => {
    const dead = new VoidVMClient({ baseURL: 'http://127.0.0.1:1/api/v1', token: 't' });
    const e1 = await dead.vms.list().catch((e) => e);
    assert.ok(e1 instanceof TransportError);
    assert.equal(e1.code, 'NETWORK_ERROR');
    routes['GET /vms/slow'] = () => new Promise((r) => setTimeout(() => r(ok(vm('slow'))), 300));
    const c = new VoidVMClient({ baseURL: server.baseURL, token: 't', timeoutMs: 50 });
    const e2 = await c.vms.get('slow').catch((e) => e);
    assert.ok(e2 instanceof TransportError);
    assert.equal(e2.code, 'TIMEOUT');
  });
});

describe('rate limiting', () => {
  test('429 is retried after Retry-After (default on)', async () => {
    let n = 0;
    routes['GET /vms/vm-1'] = () =>
      ++n === 1 ? fail(429, 'RATE_LIMIT_EXCEEDED', 'slow down', null, { 'Retry-After': '0' }) : ok(vm('vm-1'));
    assert.equal((await client().vms.get('vm-1')).id, 'vm-1');
    assert.equal(server.requests.length, 2);
  });

  test('gives up after maxRetries, or at once when disabled, with retryAfter', async () => {
    routes['GET /vms/vm-1'] = () => fail(429, 'RATE_LIMIT_EXCEEDED', 'slow down', null, { 'Retry-After': '0' });
    const c1 = new VoidVMClient({ baseURL: server.baseURL, token: 't', retryOnRateLimit: 2 });
    const e1 = await c1.vms.get('vm-1').catch((e) => e);
    assert.ok(e1 instanceof RateLimitError);
    assert.equal(e1.retryAfter, 0);
    assert.equal(server.requests.length, 3);
    server.requests.length = 0;
    const c2 = new VoidVMClient({ baseURL: server.baseURL, token: 't', retryOnRateLimit: false });
    await assert.rejects(c2.vms.get('vm-1'), RateLimitError);
    assert.equal(server.requests.length, 1);
  });

  test('a Retry-After longer than maxRetryDelayMs is not waited for', async () => {
    routes['GET /vms/vm-1'] = () => fail(429, 'RATE_LIMIT_EXCEEDED', 'slow down', null, { 'Retry-After': '120' });
    const e = await client().vms.get('vm-1').catch((x) => x);
    assert.equal(e.retryAfter, 120);
    assert.equal(server.requests.length, 1);
  });
});

describe('auth', () => {
  const loginData = (token) => ({
    token,
    token_type: 'Bearer',
    expires_in: 3600,
    refresh_token: `refresh-${token}`,
    user: { id: 'usr-1', username: 'admin', role: 'admin' },
  });

  test('VoidVMClient.login posts credentials without a token and uses the JWT afterwards', async () => {
    routes['POST /auth/login'] = (req) =>
      req.body.password === 'admin123'
        ? { status: 200, body: { ...ok(loginData('jwt-1')).body, token: 'jwt-1' } }
        : fail(401, 'INVALID_CREDENTIALS', 'bad credentials');
    routes['GET /auth/me'] = () => ok({ id: 'usr-1', username: 'admin' });
    routes['POST /auth/refresh'] = (req) => ok(loginData(`jwt-2-${req.body.refresh_token}`));

    const c = await VoidVMClient.login(server.baseURL, 'admin', 'admin123');
    assert.equal(server.requests[0].headers.authorization, undefined);
    assert.deepEqual(server.requests[0].body, { username: 'admin', password: 'admin123' });
    assert.equal(c.token, 'jwt-1');
    assert.equal((await c.auth.me()).username, 'admin');
    assert.equal(last().headers.authorization, 'Bearer jwt-1');
    await c.auth.refresh();
    assert.deepEqual(last().body, { refresh_token: 'refresh-jwt-1' });
    assert.equal(c.token, 'jwt-2-refresh-jwt-1');

    await assert.rejects(VoidVMClient.login(server.baseURL, 'admin', 'nope'), {
      name: 'AuthenticationError',
      code: 'INVALID_CREDENTIALS',
    });
  });

  test('password, logout, API tokens', async () => {
    routes['PUT /auth/password'] = () => ok(null);
    routes['POST /auth/logout'] = () => ok(null);
    routes['GET /auth/tokens'] = () => ok({ tokens: [{ id: 'tok-1', name: 'ci', prefix: 'vvm_ab' }] });
    routes['POST /auth/tokens'] = (req) => ok({ id: 'tok-2', name: req.body.name, prefix: 'vvm_cd', token: 'vvm_secret' }, 201);
    routes['DELETE /auth/tokens/tok-2'] = () => ok(null);
    const c = client();
    await c.auth.changePassword('old', 'new-password');
    assert.deepEqual(last().body, { current_password: 'old', new_password: 'new-password' });
    assert.deepEqual((await c.auth.listTokens()).map((t) => t.id), ['tok-1']);
    const created = await c.auth.createToken({ name: 'ci', expires_in_days: 7 });
    assert.equal(created.token, 'vvm_secret');
    assert.deepEqual(last().body, { name: 'ci', expires_in_days: 7 });
    await c.auth.revokeToken('tok-2');
    assert.equal(last().method, 'DELETE');
    await c.auth.logout();
    assert.equal(last().path, '/api/v1/auth/logout');
    assert.equal(c.token, undefined);
  });
});

describe('images, users, system', () => {
  test('images', async () => {
    routes['GET /images'] = () => ok({ images: [{ id: 'img-1', name: 'alpine' }] });
    routes['GET /images/alpine'] = () => ok({ id: 'img-1', name: 'alpine' });
    routes['POST /images'] = (req) =>
      ok({ id: 'img-2', name: typeof req.body === 'object' ? req.body.name : 'uploaded', ct: req.headers['content-type'] }, 201);
    routes['POST /images/upload'] = (req) =>
      ok({ id: 'img-3', name: req.query.name, format: req.query.format, ct: req.headers['content-type'], size: req.raw.length }, 201);
    routes['DELETE /images/img-2'] = () => fail(409, 'IMAGE_IN_USE', 'in use');
    const c = client();
    assert.equal((await c.images.list())[0].name, 'alpine');
    assert.equal((await c.images.get('alpine')).id, 'img-1');
    const img = await c.images.create({ name: 'deb', format: 'qcow2', url: 'https://example.org/deb.qcow2' });
    assert.equal(img.name, 'deb');
    const up = await c.images.upload({ name: 'tiny', format: 'raw', file: new Uint8Array([1, 2, 3]) });
    assert.equal(up.ct, 'application/octet-stream');
    assert.deepEqual([up.name, up.format, up.size], ['tiny', 'raw', 3]);
    await assert.rejects(c.images.delete('img-2'), ConflictError);
  });

  test('users: paging, CRUD', async () => {
    routes['GET /users'] = (req) => {
      const page = Number(req.query.page);
      return ok({ users: [{ id: `usr-${page}` }], pagination: { page, limit: 1, total: 2, pages: 2 } });
    };
    routes['POST /users'] = (req) => ok({ id: 'usr-3', ...req.body }, 201);
    routes['GET /users/usr-3'] = () => ok({ id: 'usr-3' });
    routes['PUT /users/usr-3'] = (req) => ok({ id: 'usr-3', ...req.body });
    routes['DELETE /users/usr-3'] = () => ok(null);
    const c = client();
    assert.deepEqual((await c.users.list({ limit: 1 })).map((u) => u.id), ['usr-1', 'usr-2']);
    assert.equal((await c.users.listPage({ page: 2 })).pagination.pages, 2);
    assert.equal((await c.users.create({ username: 'alice', password: 'pw-123456' })).username, 'alice');
    assert.equal((await c.users.get('usr-3')).id, 'usr-3');
    assert.equal((await c.users.update('usr-3', { status: 'disabled' })).status, 'disabled');
    await c.users.delete('usr-3');
    assert.equal(last().method, 'DELETE');
  });

  test('system endpoints hit the documented paths; health/ready send no token', async () => {
    const paths = {
      'GET /system/info': { version: '0.1.0' },
      'GET /system/version': { version: '0.1.0', api_version: 'v1' },
      'GET /system/stats': { vms: {} },
      'GET /config': { a: 1 },
      'PUT /config': { a: 2 },
      'GET /logs': { logs: [], pagination: { page: 1, limit: 20, total: 0, pages: 0 } },
      'GET /roles': { roles: [{ name: 'admin', permissions: ['system:admin'] }] },
      'GET /permissions': { permissions: [{ id: 'vm:read', description: 'read' }] },
      'GET /health': { status: 'ok' },
      'GET /ready': { status: 'ready' },
    };
    for (const [k, v] of Object.entries(paths)) routes[k] = () => ok(v);
    const c = client();
    assert.equal((await c.system.info()).version, '0.1.0');
    assert.equal((await c.system.version()).api_version, 'v1');
    await c.system.stats({ period: '24h' });
    assert.deepEqual(last().query, { period: '24h' });
    assert.equal((await c.system.getConfig()).a, 1);
    assert.equal((await c.system.updateConfig({ a: 2 })).a, 2);
    assert.deepEqual(last().body, { a: 2 });
    assert.deepEqual((await c.system.logs({ level: 'info' })).logs, []);
    assert.equal((await c.system.roles())[0].name, 'admin');
    assert.equal((await c.system.permissions())[0].id, 'vm:read');
    assert.equal((await c.system.health()).status, 'ok');
    assert.equal(last().headers.authorization, undefined);
    assert.equal((await c.system.ready()).status, 'ready');
    assert.equal(last().headers.authorization, undefined);
  });
});

describe('options', () => {
  test('custom fetch, extra headers, per-call headers, baseURL trailing slash', async () => {
    const seen = [];
    const fetch = (url, init) => {
      seen.push({ url, init });
      return Promise.resolve(new Response(JSON.stringify(ok({ version: 'x', api_version: 'v1' }).body)));
    };
    const c = new VoidVMClient({ baseURL: 'http://example.invalid/api/v1/', token: 't', fetch, headers: { 'X-A': '1' } });
    await c.system.version({ headers: { 'X-Request-ID': 'mine' } });
    assert.equal(seen[0].url, 'http://example.invalid/api/v1/system/version');
    assert.equal(seen[0].init.headers['X-A'], '1');
    assert.equal(seen[0].init.headers['X-Request-ID'], 'mine');
  });

  test('an AbortSignal aborts the call', async () => {
    routes['GET /vms/slow'] = () => new Promise((r) => setTimeout(() => r(ok(vm('slow'))), 300));
    const e = await client().vms.get('slow', { signal: AbortSignal.timeout(20) }).catch((x) => x);
    assert.ok(e instanceof TransportError);
    assert.equal(e.code, 'ABORTED');
  });

  test('deriveWsURL and wsURL', () => {
    assert.equal(deriveWsURL('http://localhost:3000/api/v1'), 'ws://localhost:3000/ws');
    assert.equal(deriveWsURL('https://h.example/voidvm/api/v1/'), 'wss://h.example/voidvm/ws');
    const c = new VoidVMClient({ baseURL: 'http://localhost:3000/api/v1', token: 'a b' });
    assert.equal(c.wsURL(), 'ws://localhost:3000/ws?token=a+b');
  });

  test('baseURL is required', () => {
    assert.throws(() => new VoidVMClient({}), TypeError);
  });
});
