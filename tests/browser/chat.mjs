// Two browser pages chat through a real wsgate server (demo mode) in headless Chromium.
//
//   npm ci && node chat.mjs [path/to/wsgate]     (default: ../../target/debug/wsgate)
//
// Starts the binary on a free port in a temporary directory, opens two pages, each picks a
// name, gets a demo token, a ticket, joins room:lobby; they exchange messages; the countdown
// must show. Saves a screenshot to ../../target/browser-artifacts/chat.png. Every wait is
// bounded; exit code 0 only when all of it happened.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(process.argv[2] ?? join(here, '../../target/debug/wsgate'));
const artifacts = resolve(here, '../../target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });

const cwd = mkdtempSync(join(tmpdir(), 'wsgate-browser-'));
const server = spawn(bin, ['serve', '--demo', '--listen', '127.0.0.1:0'], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
let logs = '';
const addr = await new Promise((ok, fail) => {
  const timer = setTimeout(() => fail(new Error('server did not start:\n' + logs)), 15000);
  server.stderr.on('data', (d) => {
    logs += d;
    const m = /wsgate listening on (\S+)/.exec(logs);
    if (m) { clearTimeout(timer); ok(m[1]); }
  });
  server.on('exit', (code) => fail(new Error(`server exited (${code}):\n${logs}`)));
});
const base = `http://${addr}`;

let browser;
try {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const errors = [];
  const enter = async (name) => {
    const page = await browser.newPage({ viewport: { width: 720, height: 640 } });
    page.setDefaultTimeout(10000);
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    await page.goto(base + '/');
    await page.getByLabel('Your name').fill(name);
    await page.getByRole('button', { name: 'Join' }).click();
    await page.locator('#messages').getByText('joined room:lobby').waitFor();
    return page;
  };
  const alice = await enter('alice');
  const bob = await enter('bob');
  await alice.getByLabel('Message', { exact: true }).fill('hello bob');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  await bob.locator('#messages').getByText('hello bob').waitFor();
  await bob.getByLabel('Message', { exact: true }).fill('hi alice');
  await bob.getByRole('button', { name: 'Send' }).click();
  await alice.locator('#messages').getByText('hi alice').waitFor();
  await alice.waitForFunction(() => /^\d+ s$/.test(document.querySelector('#countdown').textContent));
  const status = await alice.locator('#status').textContent();
  if (status !== 'Connected as alice') throw new Error(`unexpected status: ${status}`);
  if (errors.length) throw new Error('page errors: ' + errors.join('; '));
  await alice.screenshot({ path: join(artifacts, 'chat.png') });
  console.log(`screenshot: ${join(artifacts, 'chat.png')}`);
  console.log('browser: 1 passed, 0 failed');
} finally {
  await browser?.close();
  server.kill('SIGTERM');
}
