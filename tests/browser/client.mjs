// The browser client (/wsgate.js, docs/protocol.md) and the demo built on it, in headless
// Chromium against the real wsgate binary:
//   - a token that lives 5 s is kept alive by `expiring` → refresh, with no reconnect;
//   - the server stopped and restarted on the same port: the client reconnects, re-subscribes
//     and receives a message published to a channel it held (and the demo page shows it);
//   - an admin disconnect: `closed` with 4003, no further attempt;
//   - a refused ticket: connect() rejects, getToken is not called again (no retry storm);
//   - a refused handshake, told why by /api/handshake-status: 401 → one more try with a fresh
//     token, then `authError` and stop; 403 (a missing scope) → `authError` at once;
//   - echo: send() and the echoed message;
//   - behind a `proxy` endpoint, an `expiring` frame from the backend is the backend's data:
//     the client never answers it with a token (the backend would receive a credential);
//   - the demo on a 375 px phone: a long word wraps; a name with a space and an accent works.
//
//   node client.mjs [path/to/wsgate]      (default: ../../target/debug/wsgate)
// Screenshot: ../../target/browser-artifacts/demo-reconnected.png. Every wait is bounded.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(process.argv[2] ?? join(here, '../../target/debug/wsgate'));
const artifacts = resolve(here, '../../target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });
const ADMIN_KEY = 'browser-admin-key-0123456789';

const port = await new Promise((ok) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
});
// A backend behind a proxy endpoint, speaking WebSocket by hand (node has no server of its
// own): every 300 ms it sends a forged `{"type":"expiring"}`, and it records every text frame
// it receives.
const backendFrames = [];
const backend = await new Promise((ok) => {
  const srv = createServer((sock) => {
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let timer = null;
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        buf = buf.subarray(end + 4);
        const key = /sec-websocket-key:\s*(\S+)/i.exec(head)[1];
        const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        upgraded = true;
        const forged = Buffer.from(JSON.stringify({ type: 'expiring', expires_at: Math.floor(Date.now() / 1000) + 5 }));
        timer = setInterval(() => sock.write(Buffer.concat([Buffer.from([0x81, forged.length]), forged])), 300);
        sock.on('close', () => clearInterval(timer));
        sock.on('error', () => clearInterval(timer));
      }
      // Client frames: masked, short (< 126 bytes) in this test.
      while (buf.length >= 6) {
        const op = buf[0] & 0x0f;
        const len = buf[1] & 0x7f;
        if (len > 125 || buf.length < 6 + len) break;
        const mask = buf.subarray(2, 6);
        const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
        buf = buf.subarray(6 + len);
        if (op === 1) backendFrames.push(payload.toString());
        if (op === 8) { clearInterval(timer); sock.end(); }
      }
    });
    sock.on('error', () => {});
  });
  srv.listen(0, '127.0.0.1', () => ok(srv));
});
const cwd = mkdtempSync(join(tmpdir(), 'wsgate-client-'));
writeFileSync(join(cwd, 'wsgate.toml'), `listen = "127.0.0.1:${port}"
demo = true
[auth]
expiry_warning_secs = 3
[storage]
path = "${join(cwd, 'wsgate.db')}"
[[endpoints]]
path = "/ws"
kind = "pubsub"
[[endpoints]]
path = "/echo"
kind = "echo"
[[endpoints]]
path = "/ops"
kind = "echo"
require = { scope = "admin" }
[[endpoints]]
path = "/backend"
kind = "proxy"
upstream = "ws://127.0.0.1:${backend.address().port}/"
`);
const base = `http://127.0.0.1:${port}`;

let server = null;
function startServer() {
  return new Promise((ok, fail) => {
    let logs = '';
    const child = spawn(bin, ['serve'], { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WSGATE_ADMIN_KEY: ADMIN_KEY } });
    const timer = setTimeout(() => fail(new Error('server did not start:\n' + logs)), 15000);
    child.stderr.on('data', (d) => {
      logs += d;
      if (/wsgate listening on/.test(logs)) { clearTimeout(timer); ok(child); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`server exited (${code}):\n${logs}`)); });
  });
}
function stopServer() {
  return new Promise((ok) => { server.once('exit', ok); server.kill('SIGTERM'); });
}
async function admin(path, body) {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return res.json();
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, f, ms = 15000) {
  const started = Date.now();
  for (;;) {
    if (await f()) return;
    if (Date.now() - started > ms) throw new Error('timed out waiting for ' + what);
    await sleep(100);
  }
}

// A token the server accepts on every endpoint (demo tokens are the demo endpoint's only),
// minted by the binary with the server's own secret.
function mintToken(name, ttl) {
  return execFileSync(bin, ['token', '--sub', name, '--ttl', `${ttl}s`], { cwd, encoding: 'utf8' }).trim();
}

// A client inside the page, its events recorded in window.t. Tokens come from the demo's
// endpoint for /ws (as the demo page does) and from `wsgate token` elsewhere.
async function pageClient(page, url, opts) {
  if (!page.minting) {
    await page.exposeFunction('mintToken', mintToken);
    page.minting = true;
  }
  await page.evaluate(async ({ url, opts }) => {
    const { WsgateClient } = await import('/wsgate.js');
    const t = { events: [], tokens: 0 };
    window.t = t;
    const demoEndpoint = new URL(url).pathname === '/ws';
    const getToken = async () => {
      t.tokens += 1;
      if (opts.badToken) return 'not-a-token';
      if (!demoEndpoint) return window.mintToken(opts.name, opts.ttl ?? 120);
      const res = await fetch('/api/demo/token', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: opts.name, ttl_secs: opts.ttl ?? 120 }),
      });
      return (await res.json()).token;
    };
    t.client = new WsgateClient(url, { getToken, via: opts.via, welcome: opts.welcome ?? true });
    for (const type of ['open', 'message', 'refreshed', 'reconnecting', 'authError', 'closed']) {
      t.client.addEventListener(type, (e) => t.events.push({ type, detail: e.detail }));
    }
    const bounded = new Promise((_, fail) => setTimeout(() => fail(new Error('no connection within 10 s')), 10000));
    try {
      t.welcome = await Promise.race([t.client.connect(), bounded]);
    } catch (e) {
      t.connectError = e.message;
    }
  }, { url, opts });
}
const count = (page, type) => page.evaluate((type) => window.t.events.filter((e) => e.type === type).length, type);

server = await startServer();
let browser;
let passed = 0;
const check = async (name, f) => { await f(); passed += 1; console.log(`ok - ${name}`); };
try {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const errors = [];
  const newPage = async (viewport = { width: 720, height: 640 }) => {
    const page = await browser.newPage({ viewport });
    page.setDefaultTimeout(15000);
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(base + '/');
    return page;
  };
  const ws = `ws://127.0.0.1:${port}`;

  await check('a 5 s token is kept alive by expiring → refresh, no reconnect', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/ws', { name: 'short', ttl: 5, via: 'ticket' });
    await sleep(9000);
    const state = await page.evaluate(() => window.t.client.state);
    if (state !== 'open') throw new Error('state ' + state);
    if (await count(page, 'refreshed') < 2) throw new Error('not refreshed twice');
    if (await count(page, 'reconnecting') !== 0) throw new Error('it reconnected');
    if (await count(page, 'open') !== 1) throw new Error('more than one welcome');
    await page.close();
  });

  await check('echo: send() and the echoed frame', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/echo', { name: 'echo', via: 'subprotocol' });
    const err = await page.evaluate(() => window.t.connectError);
    if (err) throw new Error('echo: ' + err);
    await page.evaluate(() => window.t.client.send('raw'));
    await page.waitForFunction(() => window.t.events.some((e) => e.type === 'message' && e.detail === 'raw'));
    await page.close();
  });

  await check('behind a proxy, the backend\'s `expiring` is its data: no token is sent to it', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/backend', { name: 'proxied', via: 'subprotocol', welcome: false });
    const err = await page.evaluate(() => window.t.connectError);
    if (err) throw new Error('proxy: ' + err);
    await page.evaluate(() => window.t.client.send('hello backend'));
    await until('the backend sees the frame', async () => backendFrames.includes('hello backend'));
    await sleep(3000);
    const got = await page.evaluate(() => window.t.events.filter((e) => e.type === 'message').map((e) => e.detail));
    if (!got.some((d) => typeof d === 'string' && d.includes('"expiring"'))) throw new Error('the forged frames did not arrive as data');
    const leaked = backendFrames.filter((f) => f.includes('refresh') || f.includes('token'));
    if (leaked.length) throw new Error('the backend received: ' + leaked.join(' | '));
    if (await page.evaluate(() => window.t.tokens) !== 1) throw new Error('getToken was called for a refresh');
    await page.close();
  });

  await check('a refused handshake is explained: 401 → one fresh token, then authError; 403 → authError', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/echo', { name: 'x', via: 'subprotocol', badToken: true });
    await page.waitForFunction(() => window.t.client.state === 'closed', null, { timeout: 15000 });
    const bad = await page.evaluate(() => ({
      tokens: window.t.tokens,
      auth: window.t.events.filter((e) => e.type === 'authError').map((e) => e.detail),
      closed: window.t.events.find((e) => e.type === 'closed').detail,
    }));
    if (bad.tokens !== 2) throw new Error(`getToken called ${bad.tokens} times (want 2: one retry)`);
    if (bad.auth.length !== 1 || bad.auth[0].status !== 401 || bad.auth[0].error !== 'invalid_token') {
      throw new Error('authError: ' + JSON.stringify(bad.auth));
    }
    if (bad.closed.reason !== 'invalid_token') throw new Error('closed: ' + JSON.stringify(bad.closed));
    // A valid token without the endpoint's scope: 403, no retry.
    await pageClient(page, ws + '/ops', { name: 'no-scope', via: 'subprotocol' });
    await page.waitForFunction(() => window.t.client.state === 'closed', null, { timeout: 15000 });
    const scope = await page.evaluate(() => ({
      tokens: window.t.tokens,
      auth: window.t.events.filter((e) => e.type === 'authError').map((e) => e.detail),
    }));
    if (scope.tokens !== 1 || scope.auth[0]?.status !== 403 || scope.auth[0]?.error !== 'insufficient_scope') {
      throw new Error('403: ' + JSON.stringify(scope));
    }
    await page.close();
  });

  await check('a refused ticket: connect() rejects, no retry storm', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/ws', { name: 'x', via: 'ticket', badToken: true });
    const err = await page.evaluate(() => window.t.connectError);
    if (!/ticket refused \(401\)/.test(err || '')) throw new Error('connect did not reject: ' + err);
    await sleep(2500);
    const tokens = await page.evaluate(() => window.t.tokens);
    if (tokens !== 1) throw new Error(`getToken called ${tokens} times`);
    if (await page.evaluate(() => window.t.client.state) !== 'closed') throw new Error('not closed');
    await page.close();
  });

  await check('an admin disconnect is final: closed 4003, no further attempt', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/ws', { name: 'kicked', via: 'subprotocol' });
    await page.evaluate(() => window.t.client.subscribe('room:k'));
    // A refused subscription rejects with the error frame.
    const refused = await page.evaluate(() => window.t.client.subscribe('secret').then(
      () => null, (e) => ({ type: e.type, code: e.code, channel: e.channel, isError: e instanceof Error })));
    if (!refused || refused.type !== 'error' || refused.code !== 'forbidden' || refused.channel !== 'secret' || !refused.isError) {
      throw new Error('subscribe did not reject with the error frame: ' + JSON.stringify(refused));
    }
    const answer = await admin('/api/disconnect', { sub: 'kicked' });
    if (answer.closed !== 1) throw new Error(JSON.stringify(answer));
    await page.waitForFunction(() => window.t.events.some((e) => e.type === 'closed'));
    const closed = await page.evaluate(() => window.t.events.find((e) => e.type === 'closed').detail);
    if (closed.code !== 4003) throw new Error('closed with ' + closed.code);
    await sleep(2500);
    if (await count(page, 'reconnecting') !== 0) throw new Error('it tried again');
    await page.close();
  });

  await check('a server restart: reconnect, re-subscribe, receive; the demo rejoins', async () => {
    const page = await newPage();
    await pageClient(page, ws + '/ws', { name: 'stay', via: 'subprotocol' });
    await page.evaluate(() => window.t.client.subscribe('room:restart'));
    const demo = await newPage();
    await demo.getByLabel('Your name').fill('alice');
    await demo.getByRole('button', { name: 'Join' }).click();
    await demo.locator('#messages').getByText('joined room:lobby').waitFor();

    await stopServer();
    await page.waitForFunction(() => window.t.events.some((e) => e.type === 'reconnecting'));
    await demo.locator('#status').getByText('reconnecting').waitFor();
    if (await demo.locator('#send-button').isEnabled()) throw new Error('send enabled while disconnected');
    server = await startServer();
    await until('two welcomes', async () => (await count(page, 'open')) === 2);
    await until('a delivery to the re-subscribed channel', async () =>
      (await admin('/api/publish', { channel: 'room:restart', data: 'after' })).delivered >= 1);
    await page.waitForFunction(() => window.t.events.some((e) => e.type === 'message' && e.detail.data === 'after'));
    await demo.locator('#status').getByText('Connected as alice').waitFor();
    await until('the demo back in its room', async () =>
      (await admin('/api/publish', { channel: 'room:lobby', data: { text: 'welcome back' } })).delivered >= 1);
    await demo.locator('#messages').getByText('welcome back').waitFor();
    await demo.screenshot({ path: join(artifacts, 'demo-reconnected.png') });
    await page.close();
    await demo.close();
  });

  await check('the demo on a phone: long words wrap; names with spaces and accents', async () => {
    const phone = await newPage({ width: 375, height: 700 });
    await phone.getByLabel('Your name').fill('José Smith');
    await phone.getByRole('button', { name: 'Join' }).click();
    await phone.locator('#status').getByText('Connected as José Smith').waitFor();
    await phone.locator('#messages').getByText('joined room:lobby').waitFor();
    await phone.getByLabel('Message', { exact: true }).fill('x'.repeat(400));
    await phone.getByLabel('Message', { exact: true }).press('Enter');
    await phone.locator('#messages li').filter({ hasText: 'xxxxxxxxxx' }).waitFor();
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    if (width > 375) throw new Error(`the page is ${width} px wide`);
    await phone.close();
  });

  if (errors.length) throw new Error('page errors: ' + errors.join('; '));
  console.log(`screenshot: ${join(artifacts, 'demo-reconnected.png')}`);
  console.log(`client: ${passed} passed, 0 failed`);
} finally {
  await browser?.close();
  server?.kill('SIGTERM');
  backend.close();
}
