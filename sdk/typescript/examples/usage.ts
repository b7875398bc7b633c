// Typed tour of the SDK; checked by `npm run typecheck` (tsc --noEmit), not executed.
import {
  ConflictError,
  NotFoundError,
  QuotaExceededError,
  RateLimitError,
  ValidationError,
  VoidVMClient,
  VoidVMError,
  errorFromOperation,
  type Operation,
  type OperationEventData,
  type VM,
  type VoidVMEvent,
} from '@void-vm/sdk'

const client = await VoidVMClient.login('http://localhost:3000/api/v1', 'admin', 'admin123', {
  timeoutMs: 30_000,
  retryOnRateLimit: 2,
})

const me = await client.auth.me()
console.log(`logged in as ${me.username} (${me.role})`)

// Listing: all pages, or one page with its pagination.
const running: VM[] = await client.vms.list({ status: 'running', sort: 'name' })
const { vms, pagination } = await client.vms.listPage({ page: 1, limit: 20, search: 'web' })
console.log(running.length, vms.length, pagination.total)

// Lifecycle.
const vm = await client.vms.create({ name: 'web-1', cpu: 1, memory: 512, disk: 5, os: 'alpine' })
await client.vms.start(vm.id) // waits until running
await client.vms.stop(vm.id, { force: false, timeout: 30 })
const starting = await client.vms.start(vm.id, { wait: false }) // 202, returns at once
const started: Operation = await client.operations.wait(starting.operation, { timeoutMs: 60_000 })
if (started.status === 'failed') console.log(started.error?.code, errorFromOperation(started)?.name)
const ready = await client.vms.waitFor(vm.id, 'running', { timeoutMs: 60_000 })
console.log(ready.ip, ready.ports?.ssh)

const metrics = await client.vms.metrics(vm.id)
console.log(metrics.cpu_percent, metrics.memory.used_mb)
const { log } = await client.vms.consoleLog(vm.id, { tail: 4096 })
console.log(log)

// Errors are typed.
try {
  await client.vms.get('vm-missing')
} catch (err) {
  if (err instanceof NotFoundError) console.log(err.code, err.requestId)
  else if (err instanceof ValidationError) console.log(err.fields.map((f) => `${f.field}: ${f.reason}`))
  else if (err instanceof QuotaExceededError) console.log('quota', err.message)
  else if (err instanceof ConflictError) console.log('conflict', err.code)
  else if (err instanceof RateLimitError) console.log('retry after', err.retryAfter)
  else if (err instanceof VoidVMError) console.log(err.status, err.code, err.details)
  else throw err
}

// Events: callback style...
const sub = await client.events.subscribe(
  [{ topic: 'vm-status', vmId: vm.id }, { topic: 'vm-metrics', vmId: vm.id, interval: 5 }],
  (event: VoidVMEvent) => console.log(event.type, event.data.eventId, event.data),
)
client.events.onError((err) => console.error('events:', err.code, err.message))

// ...or an async iterator.
for await (const event of client.events.stream('vm-status-all')) {
  if (event.data.vmId === vm.id && event.data.status === 'running') break
}
sub.unsubscribe()

// Serial console.
const term = await client.console(vm.id)
term.onOutput((chunk) => process.stdout.write(chunk))
term.write('\n')
await term.waitForOutput(/login: $/, 60_000, { partialLine: true }) // a prompt ends no line
term.write('root\n')
await term.waitForOutput('#', 10_000)
term.close()

// Images, users, system.
const images = await client.images.list()
const alpine = await client.images.get('alpine')
console.log(images.length, alpine.format)

// Operations: a URL import with `wait: false` answers at once; wait on (or cancel) its operation.
const pulling = await client.images.create({
  name: 'debian', format: 'qcow2', url: 'https://example.org/debian.qcow2', wait: false,
})
const pulled = await client.operations.wait(pulling.operation, { throwOnFailure: true, pollSeconds: 10 })
console.log(pulling.status, pulled.result?.image_id)
const runningOps: Operation[] = await client.operations.list({ status: 'running', type: 'image.pull' })
const { operations, pagination: opsPage } = await client.operations.listPage({ limit: 10 })
console.log(runningOps.length, operations.map((op) => `${op.type} ${op.progress ?? '?'}%`), opsPage.total)
try {
  await client.operations.cancel(runningOps[0]?.id ?? 'op-000000000000')
} catch (err) {
  if (err instanceof ConflictError && err.code === 'NOT_CANCELLABLE') console.log('already finished')
  else if (!(err instanceof NotFoundError)) throw err
}
for await (const event of client.events.stream('operations')) {
  const op = event.data as OperationEventData // every change of your operations
  console.log(op.eventId, op.id, op.status)
  if (op.id === pulling.operation?.id && op.status !== 'running') break
}
const user = await client.users.create({ username: 'alice', password: 's3cret-pass', quota: { max_vms: 3 } })
await client.users.update(user.id, { status: 'disabled' })
const info = await client.system.info()
const version = await client.system.version()
const stats = await client.system.stats({ period: '24h' })
await client.system.updateConfig({ rate_limits: { default: '200/minute', per_user: { alice: '1000/minute' } } })
const audit = await client.system.logs({ page: 1, limit: 50, vm: vm.id })
console.log(info, version.api_version, stats, audit.pagination.total)

// API tokens for automation.
const apiToken = await client.auth.createToken({ name: 'ci', expires_in_days: 30 })
const ci = new VoidVMClient({ baseURL: client.baseURL, token: apiToken.token })
console.log((await ci.vms.list()).length)
await client.auth.revokeToken(apiToken.id)

await client.vms.delete(vm.id, { force: true })
client.events.close()
