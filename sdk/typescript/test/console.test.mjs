// Serial console over the WebSocket API against a tiny ws server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { VoidVMClient } from '@void-vm/sdk';
import { push, startServer } from './helpers/server.mjs';

let server;
before(async () => {
  server = await startServer(() => undefined);
});
after(() => server.close());

const client = () =>
  new VoidVMClient({ baseURL: server.baseURL, token: 'jwt-1', reconnect: { initialDelayMs: 10 } });

test('console: terminal-connect, input, output, waitForOutput, disconnect', async () => {
  server.sockets.length = 0;
  const term = await client().console('vm-1');
  const conn = await server.socket(0);
  const connect = await server.message(conn, (m) => m.type === 'terminal-connect');
  assert.deepEqual(connect.data, { vmId: 'vm-1', type: 'serial' });

  const chunks = [];
  term.onOutput((o) => chunks.push(o));
  const login = term.waitForOutput(/login: ?$/m, 2000, { partialLine: true }); // a prompt ends no line
  push(conn, 'terminal-output', { vmId: 'vm-2', output: 'login: other vm\n' }); // ignored
  push(conn, 'terminal-output', { vmId: 'vm-1', output: 'Welcome\r\nvoid' });
  push(conn, 'terminal-output', { vmId: 'vm-1', output: 'vm login: ' });
  assert.equal(await login, 'Welcome\r\nvoidvm login: ');
  assert.deepEqual(chunks, ['Welcome\r\nvoid', 'vm login: ']);

  term.write('root\n');
  const input = await server.message(conn, (m) => m.type === 'terminal-input');
  assert.deepEqual(input.data, { vmId: 'vm-1', input: 'root\n' });

  push(conn, 'terminal-output', { vmId: 'vm-1', output: 'root\r\n# ' });
  assert.equal(await term.waitForOutput('# ', 2000), 'root\r\n# ');
  // output that arrived before the call is found too
  push(conn, 'terminal-output', { vmId: 'vm-1', output: 'hello\n' });
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(await term.waitForOutput('hello', 10), 'hello');

  await assert.rejects(term.waitForOutput('never', 30), { code: 'WAIT_TIMEOUT' });

  term.resize(120, 40);
  await server.message(conn, (m) => m.type === 'terminal-resize' && m.data.cols === 120);
  term.close();
  const bye = await server.message(conn, (m) => m.type === 'terminal-disconnect');
  assert.deepEqual(bye.data, { vmId: 'vm-1' });
  assert.throws(() => term.write('x'), { name: 'TransportError' });
});

async function attached(vmId) {
  server.sockets.length = 0;
  const term = await client().console(vmId);
  const conn = await server.socket(0);
  await server.message(conn, (m) => m.type === 'terminal-connect');
  return { term, conn };
}

test('console: a RegExp waits for the complete line when output is split mid-word', async () => {
  const { term, conn } = await attached('vm-3');
  const uname = term.waitForOutput(/Linux \S+/, 2000);
  push(conn, 'terminal-output', { vmId: 'vm-3', output: 'uname -a\r\nLinux void' });
  push(conn, 'terminal-output', { vmId: 'vm-3', output: 'vm 6.1.0-tiny x86' });
  push(conn, 'terminal-output', { vmId: 'vm-3', output: '_64 GNU/Linux\r\n# ' });
  assert.equal(await uname, 'uname -a\r\nLinux voidvm');
  assert.equal(await term.waitForOutput(/x86\S*/, 2000), ' 6.1.0-tiny x86_64');
  // a string matches at once, also in the unfinished prompt line
  assert.equal(await term.waitForOutput('# ', 2000), ' GNU/Linux\r\n# ');
  term.close();
});

test('console: a string matches across pieces; partialLine lets a prompt RegExp match', async () => {
  const { term, conn } = await attached('vm-4');
  const ready = term.waitForOutput('VoidVM tiny guest ready', 2000);
  push(conn, 'terminal-output', { vmId: 'vm-4', output: 'VoidVM tiny gu' });
  push(conn, 'terminal-output', { vmId: 'vm-4', output: 'est ready\r\n~ ' });
  assert.equal(await ready, 'VoidVM tiny guest ready');
  const prompt = term.waitForOutput(/[#$] $/, 2000, { partialLine: true });
  push(conn, 'terminal-output', { vmId: 'vm-4', output: '# ' });
  assert.equal(await prompt, '\r\n~ # ');
  push(conn, 'terminal-output', { vmId: 'vm-4', output: 'root\r\n~ # ' });
  await term.waitForOutput('root', 2000);
  await assert.rejects(term.waitForOutput(/[#$] $/, 200), (err) => {
    assert.equal(err.code, 'WAIT_TIMEOUT');
    assert.match(err.message, /partialLine: true/);
    return true;
  });
  term.close();
});

test('console: error messages reject pending waits; reconnect re-attaches', async () => {
  server.sockets.length = 0;
  const term = await client().console('vm-9');
  const first = await server.socket(0);
  await server.message(first, (m) => m.type === 'terminal-connect');
  const errors = [];
  term.onError((e) => errors.push(e.code));
  const wait = term.waitForOutput('x', 2000);
  push(first, 'error', { code: 'VM_NOT_RUNNING', message: 'VM is not running', vmId: 'vm-9' });
  await assert.rejects(wait, { code: 'VM_NOT_RUNNING' });
  assert.deepEqual(errors, ['VM_NOT_RUNNING']);

  first.ws.terminate();
  const second = await server.socket(1);
  const again = await server.message(second, (m) => m.type === 'terminal-connect');
  assert.deepEqual(again.data, { vmId: 'vm-9', type: 'serial' });
  term.close();
});
