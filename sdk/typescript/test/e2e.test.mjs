// End-to-end: the seed's snippet (examples/seed.ts) against a real VoidVM server.
//
//   VOIDVM_E2E_URL=http://localhost:3000/api/v1 VOIDVM_E2E_TOKEN=<jwt or vvm_ token> npm test
//
// (VOIDVM_E2E_USERNAME / VOIDVM_E2E_PASSWORD may replace the token.) Creates one VM with the
// seed's body (named 'my-vm' unless that name is taken), starts it, and deletes it again; starts a
// small VM with `wait: false` and waits on its operation; then a small VM on the default image
// (VoidVM's built-in tiny guest), and types a command into its serial console. VOIDVM_TEST_TIMEOUT_SCALE (e.g. 3) stretches the waits for slow software emulation.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { NotFoundError, VoidVMClient } from '@void-vm/sdk';

const baseURL = process.env.VOIDVM_E2E_URL;
const token = process.env.VOIDVM_E2E_TOKEN;
const username = process.env.VOIDVM_E2E_USERNAME;
const password = process.env.VOIDVM_E2E_PASSWORD;
const skip = !baseURL
  ? 'set VOIDVM_E2E_URL (e.g. http://localhost:3000/api/v1) and VOIDVM_E2E_TOKEN to run against a real server'
  : !token && !(username && password)
    ? 'set VOIDVM_E2E_TOKEN (or VOIDVM_E2E_USERNAME and VOIDVM_E2E_PASSWORD)'
    : false;

const scale = Number(process.env.VOIDVM_TEST_TIMEOUT_SCALE ?? '1') || 1;
/** The tiny guest's boot to a shell prompt, under software emulation (tcg) at worst. */
const BOOT_MS = 90_000 * scale;

const created = [];
let client;

async function getClient() {
  client ??= token
    ? new VoidVMClient({ baseURL, token })
    : await VoidVMClient.login(baseURL, username, password);
  return client;
}

after(async () => {
  for (const id of created) await client?.vms.delete(id, { force: true }).catch(() => {});
  client?.events.close();
});

test('e2e: the seed snippet (list, create, start)', { skip, timeout: 300_000 }, async () => {
  const client = await getClient();
  // 获取虚拟机列表
  const vms = await client.vms.list();
  assert.ok(Array.isArray(vms));
  // 创建虚拟机
  const newVm = await client.vms.create({
    // the seed's name, unless a VM called my-vm already exists
    name: vms.some((v) => v.name === 'my-vm') ? `sdk-e2e-${Date.now().toString(36)}` : 'my-vm',
    cpu: 2,
    memory: 2048,
    disk: 20,
  });
  created.push(newVm.id);
  assert.match(newVm.id, /^vm-/);
  // 启动虚拟机
  const started = await client.vms.start(newVm.id);
  assert.equal(started.status, 'running');
  assert.equal((await client.vms.get(newVm.id)).status, 'running');
  assert.ok((await client.vms.list()).some((v) => v.id === newVm.id));

  await client.vms.stop(newVm.id, { force: true });
  await client.vms.delete(newVm.id);
  created.pop();
  await assert.rejects(client.vms.get(newVm.id), NotFoundError);
});

test('e2e: typed errors carry the request id; system version', { skip }, async () => {
  const client = await getClient();
  const err = await client.vms.get('vm-001').catch((e) => e);
  assert.ok(err instanceof NotFoundError, String(err));
  assert.equal(err.code, 'VM_NOT_FOUND');
  assert.ok(err.requestId, 'X-Request-ID is exposed');
  assert.equal((await client.system.version()).api_version, 'v1');
});

test('e2e: a {wait: false} start returns its operation; waiting on it ends with the VM running', { skip, timeout: 300_000 * scale }, async () => {
  const client = await getClient();
  const vm = await client.vms.create({ name: `sdk-op-${Date.now().toString(36)}`, cpu: 1, memory: 256, disk: 1 });
  created.push(vm.id);
  const starting = await client.vms.start(vm.id, { wait: false });
  assert.match(starting.operation?.id ?? '', /^op-[0-9a-f]{12}$/);
  assert.deepEqual([starting.operation.type, starting.operation.resource_id], ['vm.start', vm.id]);
  const op = await client.operations.wait(starting.operation, { timeoutMs: 240_000 * scale, throwOnFailure: true });
  assert.equal(op.status, 'succeeded');
  assert.equal(op.result?.vm_id, vm.id);
  assert.equal((await client.vms.get(vm.id)).status, 'running');
  assert.equal((await client.operations.get(op.id)).status, 'succeeded');
  assert.ok((await client.operations.listPage({ resource_id: vm.id })).operations.some((o) => o.id === op.id));
  await assert.rejects(client.operations.cancel(op.id), { name: 'ConflictError', code: 'NOT_CANCELLABLE' });
  await assert.rejects(client.operations.get('op-000000000000'), { name: 'NotFoundError', code: 'OPERATION_NOT_FOUND' });

  await client.vms.delete(vm.id, { force: true });
  created.splice(created.indexOf(vm.id), 1);
});

test('e2e: events socket accepts a subscription', { skip, timeout: 30_000 }, async () => {
  const client = await getClient();
  const sub = await client.events.subscribe('vm-status-all', () => {});
  sub.unsubscribe();
});

test('e2e: console round trip with the tiny guest', { skip, timeout: BOOT_MS + 120_000 * scale }, async (t) => {
  const client = await getClient();
  const image = (await client.images.list()).find((i) => i.is_default);
  if (!image || !(image.name === 'tiny' || image.aliases.includes('voidvm-tiny'))) {
    t.skip(`the server's default image is ${image?.name ?? 'missing'}, not VoidVM's tiny guest`);
    return;
  }
  const vm = await client.vms.create({ name: `sdk-console-${Date.now().toString(36)}`, cpu: 1, memory: 256, disk: 1 });
  created.push(vm.id);
  assert.equal(vm.image, image.id);
  assert.equal((await client.vms.start(vm.id)).status, 'running');

  const session = await client.console(vm.id);
  let output = '';
  session.onOutput((chunk) => {
    output += chunk;
  });
  try {
    // Output from before the attach is replayed, so the banner is seen however fast the boot was.
    await session.waitForOutput('VoidVM tiny guest ready', BOOT_MS);
    await session.waitForOutput('#', BOOT_MS); // the shell's prompt
    session.write('echo MARK-$((6*7))\n');
    // The echoed command line reads MARK-$((6*7)): only the shell's answer matches.
    await session.waitForOutput('MARK-42', 30_000 * scale);
  } catch (err) {
    err.message += `\n--- console output ---\n${output.slice(-2000)}`;
    throw err;
  } finally {
    session.close();
  }

  await client.vms.delete(vm.id, { force: true });
  created.splice(created.indexOf(vm.id), 1);
  await assert.rejects(client.vms.get(vm.id), NotFoundError);
});
