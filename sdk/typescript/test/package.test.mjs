// Packaging: the CommonJS build, the published types, the operations map and check-openapi.mjs.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import * as esm from '@void-vm/sdk';
import { fail, ok, startServer } from './helpers/server.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const script = join(root, 'scripts', 'check-openapi.mjs');
const run = (...args) => spawnSync(process.execPath, [script, ...args], { encoding: 'utf8' });

test('require() loads the CommonJS build with the same API, and it works', async () => {
  const cjs = require('@void-vm/sdk');
  assert.match(require.resolve('@void-vm/sdk'), /dist[\\/]cjs[\\/]index\.js$/);
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  const server = await startServer((req) =>
    req.path === '/api/v1/vms/vm-1' ? ok({ id: 'vm-1' }) : fail(404, 'VM_NOT_FOUND', 'nope'),
  );
  try {
    const client = new cjs.VoidVMClient({ baseURL: server.baseURL, token: 't' });
    assert.equal((await client.vms.get('vm-1')).id, 'vm-1');
    const err = await client.vms.get('vm-2').catch((e) => e);
    assert.ok(err instanceof cjs.NotFoundError);
    assert.match(err.requestId, /^req-/);
    // the ws fallback loads through require() too
    const sub = await client.events.subscribe('vm-status-all', () => {});
    sub.unsubscribe();
  } finally {
    await server.close();
  }
});

test('published types resolve for ESM and CommonJS consumers (tsc, Node16 resolution)', () => {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const res = spawnSync(process.execPath, [tsc, '-p', join(root, 'test', 'consumer', 'tsconfig.json')], {
    encoding: 'utf8',
  });
  assert.equal(res.status, 0, res.stdout + res.stderr);
});

test('every entry of OPERATIONS names a method of the client', () => {
  const client = new esm.VoidVMClient({ baseURL: 'http://127.0.0.1/api/v1' });
  for (const [op, name] of Object.entries(esm.OPERATIONS)) {
    const fn = name.split('.').reduce((o, k) => o?.[k], client);
    assert.equal(typeof fn, 'function', `${op} -> ${name}`);
  }
  assert.equal(esm.normalizeOperation('get', '/api/v1/vms/{vm_id}/console/log/'), 'GET /vms/{id}/console/log');
});

/** Operations listed in the tables of docs/api.md (the decided contract). */
function documentedOperations() {
  const text = readFileSync(join(root, '..', '..', 'docs', 'api.md'), 'utf8');
  const ops = [];
  for (const line of text.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !/^(GET|POST|PUT|PATCH|DELETE)(,\s*(GET|POST|PUT|PATCH|DELETE))*$/.test(cells[1])) continue;
    const paths = [...cells[2].matchAll(/`(\/[^`]*)`/g)].map((m) => m[1]);
    const first = paths[0];
    const parent = first.split('/').length > 2 ? first.slice(0, first.lastIndexOf('/')) : '';
    const all = paths.map((p, i) => (i > 0 && parent && p.split('/').length === 2 ? parent + p : p));
    for (const method of cells[1].split(/,\s*/)) for (const p of all) ops.push([method, p]);
  }
  return ops;
}

const openapi = (ops) => {
  const paths = {};
  for (const [method, path] of ops) {
    const p = '/api/v1' + path.replace(/\{id\}/g, '{item_id}');
    (paths[p] ??= {})[method.toLowerCase()] = { responses: {} };
  }
  paths['/api/v1/openapi.json'] = { get: {} };
  paths['/metrics'] = { get: {} };
  return { openapi: '3.1.0', paths };
};

const tmp = mkdtempSync(join(tmpdir(), 'voidvm-sdk-'));
const write = (name, doc) => {
  const file = join(tmp, name);
  writeFileSync(file, JSON.stringify(doc));
  return file;
};

test('check-openapi passes for the operations of docs/api.md', { skip: !existsSync(join(root, '..', '..', 'docs', 'api.md')) && 'docs/api.md not found' }, () => {
  const ops = documentedOperations();
  assert.ok(ops.length >= 40, `parsed ${ops.length} documented operations`);
  const res = run(write('docs.json', openapi(ops)));
  assert.equal(res.status, 0, res.stdout + res.stderr);
  assert.match(res.stdout, /^OK: all \d+ operations/);
});

test('check-openapi fails listing operations without an SDK method; stale entries only warn', async () => {
  const ops = Object.keys(esm.OPERATIONS).map((k) => k.split(' '));
  const doc = openapi(ops.filter(([, p]) => p !== '/roles'));
  doc.paths['/api/v1/vms/{vm_id}/snapshots'] = { get: {}, post: {} };
  const res = run(write('extra.json', doc));
  assert.equal(res.status, 1);
  assert.match(res.stderr, /Operations without an SDK method \(2\)/);
  assert.match(res.stderr, /GET \/api\/v1\/vms\/\{vm_id\}\/snapshots/);
  assert.match(res.stderr, /POST \/api\/v1\/vms\/\{vm_id\}\/snapshots/);
  assert.match(res.stderr, /warning: mapped but not in the document: GET \/roles/);

  // from a URL (a server's /api/v1/openapi.json)
  const server = await startServer((req) => (req.path === '/api/v1/openapi.json' ? { status: 200, body: doc } : undefined));
  try {
    // asynchronous: the fake server lives in this process
    const viaUrl = await new Promise((resolve) =>
      execFile(process.execPath, [script, `http://127.0.0.1:${server.port}`], (error, stdout, stderr) =>
        resolve({ status: error ? error.code : 0, stderr }),
      ),
    );
    assert.equal(viaUrl.status, 1);
    assert.match(viaUrl.stderr, /snapshots/);
  } finally {
    await server.close();
  }
  assert.equal(run().status, 2);
  assert.equal(run(join(tmp, 'missing.json')).status, 2);
});
