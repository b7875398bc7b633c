// WebSocket events against a tiny ws server.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { VoidVMClient, matchesTopic } from '@void-vm/sdk';
import { push, startServer } from './helpers/server.mjs';

let server;
const clients = [];
const makeClient = (extra = {}) => {
  const c = new VoidVMClient({
    baseURL: server.baseURL,
    token: 'jwt-1',
    reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
    ...extra,
  });
  clients.push(c);
  return c;
};
const isSub = (m) => m.type === 'subscribe';
const until = async (pred, ms = 2000) => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

before(async () => {
  server = await startServer(() => undefined);
});
afterEach(() => {
  for (const c of clients.splice(0)) c.events.close();
  server.sockets.length = 0;
});
after(() => server.close());

test('subscribe connects to /ws?token=…, sends the documented messages, dispatches by topic', async () => {
  const c = makeClient();
  const got = [];
  const sub = await c.events.subscribe(
    [{ topic: 'vm-status', vmId: 'vm-1' }, { topic: 'system-monitor', interval: 5 }],
    (ev) => got.push(ev),
  );
  const conn = await server.socket(0);
  assert.equal(conn.url.pathname, '/ws');
  assert.equal(conn.url.searchParams.get('token'), 'jwt-1');
  await server.message(conn, (m) => m.data?.topic === 'system-monitor');
  const subs = conn.messages.filter(isSub);
  assert.deepEqual(subs.map((m) => m.data), [{ topic: 'vm-status', vmId: 'vm-1' }, { topic: 'system-monitor', interval: 5 }]);
  assert.ok(subs.every((m) => typeof m.id === 'string'));

  push(conn, 'vm-status', { vmId: 'vm-2', status: 'running', eventId: 1 }); // other VM: ignored
  push(conn, 'vm-status', { vmId: 'vm-1', status: 'running', eventId: 2 });
  push(conn, 'system-monitor', { cpu: 1, eventId: 3 });
  await until(() => got.length === 2);
  assert.deepEqual(got.map((e) => [e.type, e.data.eventId]), [['vm-status', 2], ['system-monitor', 3]]);
  assert.ok(got[0].timestamp);

  sub.unsubscribe();
  await until(() => conn.ws.readyState === 3); // last subscription gone → socket closed
});

test('reconnects after the connection drops and resubscribes with lastEventId; duplicates are dropped', async () => {
  const c = makeClient();
  const got = [];
  await c.events.subscribe('vm-status-all', (ev) => got.push(ev.data.eventId));
  const first = await server.socket(0);
  await server.message(first, isSub);
  push(first, 'vm-status', { vmId: 'vm-1', status: 'starting', eventId: 7 });
  push(first, 'vm-status', { vmId: 'vm-2', status: 'running', eventId: 8 });
  await until(() => got.length === 2);

  first.ws.terminate();
  const second = await server.socket(1);
  const resub = await server.message(second, isSub);
  assert.deepEqual(resub.data, { topic: 'vm-status-all', lastEventId: 8 });

  push(second, 'vm-status', { vmId: 'vm-2', status: 'running', eventId: 8 }); // replayed duplicate
  push(second, 'vm-status', { vmId: 'vm-1', status: 'running', eventId: 9 });
  await until(() => got.length === 3);
  assert.deepEqual(got, [7, 8, 9]);
});

test('async iterator yields events and ends on break', async () => {
  const c = makeClient();
  const stream = c.events.stream({ topic: 'vm-metrics', vmId: 'vm-1', interval: 2 });
  await stream.ready();
  const conn = await server.socket(0);
  const sub = await server.message(conn, isSub);
  assert.deepEqual(sub.data, { topic: 'vm-metrics', vmId: 'vm-1', interval: 2 });
  for (let i = 1; i <= 3; i++) push(conn, 'vm-metrics', { vmId: 'vm-1', cpu_percent: i, eventId: i });
  const seen = [];
  for await (const ev of stream) {
    seen.push(ev.data.cpu_percent);
    if (seen.length === 3) break;
  }
  assert.deepEqual(seen, [1, 2, 3]);
  await until(() => conn.ws.readyState === 3);
  assert.deepEqual((await stream.next()).done, true);
});

test('server error messages reach onError; a policy close (1008) is fatal and ends streams', async () => {
  const c = makeClient();
  const errors = [];
  c.events.onError((e) => errors.push(e.code));
  const stream = c.events.stream('vm-status-all');
  await stream.ready();
  const conn = await server.socket(0);
  push(conn, 'error', { code: 'VM_NOT_FOUND', message: 'no such VM' });
  await until(() => errors.length === 1);
  conn.ws.close(1008, 'token expired');
  await assert.rejects(stream.next(), { name: 'TransportError', code: 'WS_REJECTED' });
  assert.deepEqual(errors, ['VM_NOT_FOUND', 'WS_REJECTED']);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(server.sockets.length, 1, 'no reconnection after a policy close');
});

test('first connection failure rejects subscribe with a TransportError', async () => {
  const c = makeClient({ wsURL: `ws://127.0.0.1:${server.port}/nope` });
  await assert.rejects(c.events.subscribe('vm-status-all', () => {}), { name: 'TransportError' });
});

test("the 'operations' topic delivers operation messages only", async () => {
  const c = makeClient();
  const got = [];
  const sub = await c.events.subscribe('operations', (ev) => got.push(ev));
  const conn = await server.socket(0);
  const subscribe = await server.message(conn, isSub);
  assert.deepEqual(subscribe.data, { topic: 'operations' });
  push(conn, 'vm-status', { vmId: 'vm-1', status: 'running', eventId: 1 }); // not an operation
  push(conn, 'operation', { id: 'op-1', type: 'vm.start', status: 'succeeded', resource_id: 'vm-1', eventId: 2 });
  await until(() => got.length === 1);
  assert.deepEqual([got[0].type, got[0].data.id, got[0].data.eventId], ['operation', 'op-1', 2]);
  sub.unsubscribe();
  await until(() => conn.ws.readyState === 3);
});

test('matchesTopic', () => {
  const ev = (type, data) => ({ type, data });
  assert.ok(matchesTopic({ topic: 'vm-status-all' }, ev('vm-status', { vmId: 'x' })));
  assert.ok(matchesTopic({ topic: 'vm-status', vmId: 'x' }, ev('system-event', { vmId: 'x' })));
  assert.ok(!matchesTopic({ topic: 'vm-status', vmId: 'x' }, ev('vm-status', { vmId: 'y' })));
  assert.ok(matchesTopic({ topic: 'vm-metrics', vmId: 'x' }, ev('whatever', { topic: 'vm-metrics', vmId: 'x' })));
  assert.ok(!matchesTopic({ topic: 'system-monitor' }, ev('vm-metrics', {})));
  assert.ok(matchesTopic({ topic: 'operations' }, ev('operation', { id: 'op-1', type: 'vm.start' })));
  assert.ok(matchesTopic({ topic: 'operations' }, ev('subscribed', { topic: 'operations' })));
  assert.ok(!matchesTopic({ topic: 'operations' }, ev('vm-status', { vmId: 'x' })));
  assert.ok(!matchesTopic({ topic: 'vm-status-all' }, ev('operation', { id: 'op-1' })));
});
