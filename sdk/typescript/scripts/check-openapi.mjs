#!/usr/bin/env node
// Checks that every REST operation of an OpenAPI document has an SDK method.
//
//   node scripts/check-openapi.mjs <openapi.json | http://host:3000/api/v1/openapi.json | http://host:3000>
//
// Compares the document's operations under /api/v1 with OPERATIONS (src/operations.ts): exits 1
// listing the operations that have no SDK method, or whose mapped method does not exist on a
// client. Mapped operations missing from the document are reported as warnings only.
import { readFile, access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const METHODS = ['get', 'put', 'post', 'delete', 'patch'];
/** Documentation routes that are not API operations. */
const IGNORED = new Set(['GET /openapi.json', 'GET /docs', 'GET /redoc', 'GET /docs/oauth2-redirect']);

const root = new URL('..', import.meta.url);

function normalize(method, path) {
  const p = path
    .replace(/^\/api\/v1(?=\/|$)/, '')
    .replace(/\{[^}]*\}/g, '{id}')
    .replace(/\/+$/, '');
  return `${method.toUpperCase()} ${p === '' ? '/' : p}`;
}

async function loadDocument(source) {
  if (/^https?:\/\//.test(source)) {
    const url = new URL(source);
    if (url.pathname === '/' || url.pathname === '') url.pathname = '/api/v1/openapi.json';
    const res = await fetch(url, { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
    return res.json();
  }
  return JSON.parse(await readFile(source, 'utf8'));
}

/** The map from the build (preferred) or, without a build, parsed from src/operations.ts. */
async function loadOperations() {
  const dist = new URL('dist/esm/index.js', root);
  try {
    await access(fileURLToPath(dist));
    const sdk = await import(dist.href);
    return { operations: sdk.OPERATIONS, client: new sdk.VoidVMClient({ baseURL: 'http://127.0.0.1/api/v1' }) };
  } catch (err) {
    if (err?.code !== 'ENOENT') throw err;
  }
  const text = await readFile(new URL('src/operations.ts', root), 'utf8');
  const operations = {};
  for (const m of text.matchAll(/'([A-Z]+ \/[^']*)':\s*'([\w.]+)'/g)) operations[m[1]] = m[2];
  return { operations, client: undefined };
}

function resolveMethod(client, name) {
  let target = client;
  for (const part of name.split('.')) target = target?.[part];
  return typeof target === 'function';
}

async function main() {
  const source = process.argv[2] ?? process.env.VOIDVM_OPENAPI;
  if (!source) {
    console.error('usage: check-openapi.mjs <openapi.json | URL>');
    process.exit(2);
  }
  const doc = await loadDocument(source);
  if (!doc || typeof doc.paths !== 'object') throw new Error(`${source} is not an OpenAPI document (no "paths")`);
  const { operations, client } = await loadOperations();
  const mapped = new Map(Object.entries(operations).map(([k, v]) => [normalize(...k.split(' ')), v]));

  const seen = new Set();
  const missing = [];
  const broken = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    if (!/^\/api\/v1(\/|$)/.test(path)) continue;
    for (const method of METHODS) {
      if (!item?.[method]) continue;
      const key = normalize(method, path);
      if (IGNORED.has(key)) continue;
      seen.add(key);
      const sdkMethod = mapped.get(key);
      if (!sdkMethod) missing.push(`${method.toUpperCase()} ${path}`);
      else if (client && !resolveMethod(client, sdkMethod)) broken.push(`${key} -> ${sdkMethod} (no such method)`);
    }
  }
  const stale = [...mapped.keys()].filter((k) => !seen.has(k));

  for (const k of stale) console.warn(`warning: mapped but not in the document: ${k}`);
  if (missing.length || broken.length) {
    if (missing.length) console.error(`Operations without an SDK method (${missing.length}):\n  ${missing.join('\n  ')}`);
    if (broken.length) console.error(`Mapped SDK methods that do not exist (${broken.length}):\n  ${broken.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`OK: all ${seen.size} operations under /api/v1 have an SDK method`);
}

main().catch((err) => {
  console.error(`check-openapi: ${err?.message ?? err}`);
  process.exit(2);
});
