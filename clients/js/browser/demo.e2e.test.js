// End to end in a real browser: the chat page of `rainbow demo` (the real
// gateway binary with its in-process chat backend) in headless Chromium,
// driven by playwright-core.
//
// Each page is loaded through its own small TCP proxy on 127.0.0.1, so the
// page, /rainbow.js and the page's WebSocket all go through it. Cutting a
// proxy destroys that page's connections and refuses new ones until it is
// restored: that is how the test takes one page's network down and up again.
//
// Run from clients/js:  node --test browser/demo.e2e.test.js
// (or browser/test.sh, which installs Chromium and the npm packages first).
//
// Environment:
//   RAINBOW_BIN      the `rainbow` binary (default: ../../target/debug/rainbow,
//                    from `cargo build -p rainbow-gateway --bins`)
//   CHROMIUM_PATH    the browser (default: /usr/bin/chromium)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const jsDir = path.resolve(here, '..');
const rainbowBin = path.resolve(jsDir, process.env.RAINBOW_BIN || '../../target/debug/rainbow');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const outputDir = path.join(here, 'output');
const screenshotPath = path.join(outputDir, 'chat.png');

/** The whole run (setup, scenario, cleanup) is bounded by this. */
const TEST_TIMEOUT = 60_000;
/** Default wait for one condition in the page. */
const WAIT = 10_000;

// What `after` cleans up.
let demo = null; // { child, port, log, exited }
let browser = null;
const proxies = [];
const chats = []; // { label, proxy, context, page, console }

// -- helpers -------------------------------------------------------------------

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection after `ms` (the timer does not outlive it). */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` (sync or async) until it returns a truthy value; throws after `timeout`. */
async function waitFor(what, check, { timeout = WAIT, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await delay(interval);
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target` (a port on 127.0.0.1).
 * `cut()` destroys every proxied connection and refuses new ones (accepted,
 * then reset at once) until `restore()`.
 */
class CuttableProxy {
  constructor(name, targetPort) {
    this.name = name;
    this.targetPort = targetPort;
    this.port = null;
    this.refusing = false;
    this.accepted = 0; // connections proxied
    this.refused = 0; // connections reset while cut
    this.sockets = new Set();
    this.server = net.createServer((client) => this.#onConnection(client));
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  get url() {
    return `http://127.0.0.1:${this.port}/`;
  }

  #onConnection(client) {
    if (this.refusing) {
      this.refused += 1;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    this.accepted += 1;
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ]) {
      this.sockets.add(a);
      a.setNoDelay(true);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        this.sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  }

  /** Drops every connection through this proxy and refuses new ones. */
  cut() {
    this.refusing = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  /** Accepts connections again. */
  restore() {
    this.refusing = false;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Starts `rainbow demo` on a free port; resolves once /hello/ answers. */
async function startDemo() {
  if (!fs.existsSync(rainbowBin)) {
    throw new Error(
      `rainbow binary not found at ${rainbowBin}.\n` +
        'Build it first (cargo build -p rainbow-gateway --bins) or set RAINBOW_BIN to its path.',
    );
  }
  const wanted = await freePort();
  // The demo configures itself; keep this process's RAINBOW_* variables
  // (RAINBOW_BIN at least) away from the gateway's configuration.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RAINBOW_')));
  env.RUST_LOG ??= 'warn';
  const child = spawn(rainbowBin, ['demo', '-p', String(wanted), '--bind', '127.0.0.1'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const demo = { child, port: null, log: '', exited: null };
  const collect = (chunk) => {
    demo.log += chunk.toString();
    if (demo.log.length > 200_000) demo.log = demo.log.slice(-100_000);
    // It falls back to the next ports when the one asked for is taken: use the one it prints.
    const m = /Rainbow demo: open http:\/\/[^:/\s]+:(\d+)\//.exec(demo.log);
    if (m && demo.port === null) demo.port = Number(m[1]);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  child.on('exit', (code, signal) => {
    demo.exited = { code, signal };
  });
  child.on('error', (err) => {
    demo.exited = { error: err };
  });

  await waitFor(
    'rainbow demo to print its URL',
    () => {
      if (demo.exited) throw Object.assign(new Error(`rainbow demo exited early: ${JSON.stringify(demo.exited)}`), { fatal: true });
      return demo.port;
    },
    { timeout: 15_000 },
  ).catch((err) => {
    throw new Error(`${err.message}\n--- rainbow demo output ---\n${demo.log}`);
  });
  await waitFor(
    `GET http://127.0.0.1:${demo.port}/hello/`,
    async () => {
      if (demo.exited) throw new Error(`rainbow demo exited: ${JSON.stringify(demo.exited)}`);
      const res = await fetch(`http://127.0.0.1:${demo.port}/hello/`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return res.ok;
    },
    { timeout: 15_000, interval: 100 },
  ).catch((err) => {
    throw new Error(`${err.message}\n--- rainbow demo output ---\n${demo.log}`);
  });
  return demo;
}

/** Stops the demo with SIGTERM (SIGKILL if it lingers). */
async function stopDemo(demo) {
  if (!demo || demo.exited) return;
  const exited = new Promise((resolve) => demo.child.once('exit', (code, signal) => resolve({ code, signal })));
  demo.child.kill('SIGTERM');
  const timer = setTimeout(() => demo.child.kill('SIGKILL'), 5000);
  const { code, signal } = await exited;
  clearTimeout(timer);
  if (code !== 0) console.error(`rainbow demo did not exit cleanly on SIGTERM (code ${code}, signal ${signal})`);
}

// -- the page ------------------------------------------------------------------

/** One chat page in its own browser context (own localStorage, so its own device id). */
async function openChat(browser, label, proxy) {
  const context = await browser.newContext({ viewport: { width: 760, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const chat = { label, proxy, context, page, console: [] };
  chats.push(chat); // for the failure screenshots
  page.on('console', (msg) => chat.console.push(`[${label} ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => chat.console.push(`[${label} pageerror] ${err.message}`));
  await page.goto(proxy.url);
  await waitOpen(chat);
  return chat;
}

function waitOpen(chat) {
  return chat.page.waitForSelector('#status[data-state="open"]');
}

async function join(chat, name) {
  const { page } = chat;
  await page.fill('#name', name);
  await page.click('#join');
  // Joined: the reply set the identity, which enables the message box.
  await page.waitForSelector('#text:not([disabled])');
}

async function say(chat, text) {
  await chat.page.fill('#text', text);
  await chat.page.click('#send');
}

/** Waits for a chat line by `name` saying `text` on the page. */
function waitChatLine(chat, name, text) {
  return chat.page.waitForFunction(
    ([name, text]) =>
      [...document.querySelectorAll('#messages li.chat')].some(
        (li) => li.querySelector('.who')?.textContent === name && li.children[1]?.textContent === text,
      ),
    [name, text],
  );
}

/** How many notices on the page contain `text`. */
function countNotices(chat, text) {
  return chat.page.evaluate(
    (text) => [...document.querySelectorAll('#messages li.notice')].filter((li) => li.textContent.includes(text)).length,
    text,
  );
}

async function waitNotices(chat, text, atLeast) {
  await waitFor(`${chat.label}: ${atLeast} notice(s) containing "${text}"`, async () => (await countNotices(chat, text)) >= atLeast);
}

function waitOnline(chat, n) {
  return chat.page.waitForFunction((n) => document.getElementById('online').textContent.trim() === `${n} online`, n);
}

// -- the test ------------------------------------------------------------------

// Last resort, should a cleanup step hang: the gateway must not outlive this
// process. (SIGKILL: the process is exiting, there is no time for more.)
process.on('exit', () => {
  if (demo && !demo.exited) demo.child.kill('SIGKILL');
});
setTimeout(() => {
  console.error(`demo.e2e.test.js: still running after ${TEST_TIMEOUT + 30_000} ms; giving up`);
  process.exit(1);
}, TEST_TIMEOUT + 30_000).unref();

before(async () => {
  demo = await startDemo();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: 20_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-proxy-server', // loopback only, whatever the environment says
    ],
  });
  for (const label of ['A', 'B']) proxies.push(await new CuttableProxy(label, demo.port).listen());
}, { timeout: 40_000 });

after(async () => {
  // Each step on its own: one failing must not keep the others from running.
  const steps = [
    ['browser', () => browser?.close()],
    ...proxies.map((p) => [`proxy ${p.name}`, () => p.close()]),
    ['rainbow demo', () => stopDemo(demo)],
  ];
  for (const [what, step] of steps) {
    try {
      await withTimeout(Promise.resolve().then(step), 10_000, `closing the ${what}`);
    } catch (err) {
      console.error('cleanup:', err.message);
    }
  }
}, { timeout: 40_000 });

test('chat demo in two browsers through the real gateway: chat, reload, cut and reconnect', { timeout: TEST_TIMEOUT }, async (t) => {
  const started = Date.now();
  fs.mkdirSync(outputDir, { recursive: true });
  for (const f of fs.readdirSync(outputDir)) if (f.startsWith('failure-')) fs.rmSync(path.join(outputDir, f));
  const step = (what) => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s  ${what}`);
  try {
    const [proxyA, proxyB] = proxies;

    step('two pages, each in its own context and through its own proxy');
    const a = await openChat(browser, 'A', proxyA);
    const b = await openChat(browser, 'B', proxyB);
    const [deviceA, deviceB] = await Promise.all([a, b].map((c) => c.page.evaluate(() => window.rainbow.deviceId)));
    assert.notEqual(deviceA, deviceB, 'the two contexts must have different device ids');

    step('both join');
    await join(a, 'alice');
    await join(b, 'bob');
    await waitNotices(a, 'bob joined the room', 1);
    await waitOnline(a, 2);
    await waitOnline(b, 2);

    step('A -> B and B -> A');
    await say(a, 'hello from alice');
    await waitChatLine(b, 'alice', 'hello from alice');
    await waitChatLine(a, 'alice', 'hello from alice');
    await say(b, 'hi alice, bob here');
    await waitChatLine(a, 'bob', 'hi alice, bob here');
    assert.ok(await a.page.locator('#messages li.chat.mine').count() >= 1, "A's own line is marked as mine");

    step('B reloads: A sees B leave, then join again');
    const leftBefore = await countNotices(a, 'bob left the room');
    const joinedBefore = await countNotices(a, 'bob joined the room');
    await b.page.reload();
    await waitNotices(a, 'bob left the room', leftBefore + 1);
    await waitOnline(a, 1);
    await waitOpen(b);
    await join(b, 'bob');
    await waitNotices(a, 'bob joined the room', joinedBefore + 1);
    await waitOnline(a, 2);
    await waitOnline(b, 2);
    assert.equal(await b.page.evaluate(() => window.rainbow.deviceId), deviceB, 'B keeps its device id across a reload');

    step("A's network is cut: A shows it is reconnecting");
    const refusedBefore = proxyA.refused;
    const [aLeftBefore, aJoinedBefore] = [await countNotices(b, 'alice left the room'), await countNotices(b, 'alice joined the room')];
    proxyA.cut();
    await a.page.waitForSelector('#status[data-state="reconnecting"]');
    assert.match(await a.page.textContent('#status'), /Reconnecting/);
    await waitNotices(b, 'alice left the room', aLeftBefore + 1);
    await waitOnline(b, 1);

    step('A sends while it is down: the SDK queues the message');
    // The page disables its message box while it is not connected, so this
    // goes through the page's client (window.rainbow) the way the page sends
    // (type 1, qos 1). Its reply is kept in window.offlineReply.
    const queued = 'sent while offline';
    assert.equal(await a.page.isDisabled('#text'), true, 'the message box is disabled while reconnecting');
    await a.page.evaluate((message) => {
      window.offlineReply = null;
      window.rainbow.send(1, { message }, { qos: 1, timeout: 30_000 }).then(
        (reply) => (window.offlineReply = { reply }),
        (err) => (window.offlineReply = { error: `${err.code}: ${err.message}` }),
      );
    }, queued);
    assert.ok((await a.page.evaluate(() => window.rainbow.pending)) > 0, 'the message is pending in A');
    // At least one reconnect attempt is refused while the network is down.
    await waitFor('a refused reconnect attempt', () => proxyA.refused > refusedBefore);
    await a.page.screenshot({ path: path.join(outputDir, 'reconnecting.png'), fullPage: true, animations: 'disabled' });
    assert.notEqual(await a.page.evaluate(() => window.rainbow.state), 'open');
    assert.equal(await countChatLines(b, queued), 0, 'nothing can reach B while A is cut off');

    step('the network is back: A reconnects by itself and the queued message reaches B');
    proxyA.restore();
    await waitOpen(a);
    await waitNotices(a, 'Reconnected.', 1);
    const { reply, error } = await waitFor('the reply to the queued message', () => a.page.evaluate(() => window.offlineReply));
    assert.equal(error, undefined, 'the queued message is answered');
    assert.deepEqual(reply, { status: 'ok' }, 'the backend accepted the queued message (it knew the name again)');
    await waitChatLine(b, 'alice', queued);
    await waitChatLine(a, 'alice', queued);
    await waitNotices(b, 'alice joined the room', aJoinedBefore + 1); // joined again under the same name
    await waitOnline(b, 2);
    await waitOnline(a, 2);
    await waitFor('A to have nothing pending', () => a.page.evaluate(() => window.rainbow.pending === 0));
    assert.equal(await countChatLines(b, queued), 1, 'the queued message arrives exactly once');
    assert.match(await a.page.textContent('#status'), /Connected/);

    step('after the reconnect both directions still work');
    await say(b, 'welcome back');
    await waitChatLine(a, 'bob', 'welcome back');
    await say(a, 'thanks!');
    await waitChatLine(b, 'alice', 'thanks!');

    step('screenshot');
    await screenshot(a, b);
    console.log(`screenshot: ${screenshotPath}`);
    step('done');
  } catch (err) {
    fs.mkdirSync(outputDir, { recursive: true });
    for (const c of chats) {
      try {
        await c.page.screenshot({ path: path.join(outputDir, `failure-${c.label}.png`), fullPage: true, timeout: 5000 });
      } catch {
        // best effort
      }
      if (c.console.length) console.error(`--- page ${c.label} console ---\n${c.console.join('\n')}`);
    }
    console.error(`--- rainbow demo output ---\n${demo?.log.slice(-5000)}`);
    console.error(`failure screenshots (if taken): ${path.join(outputDir, 'failure-*.png')}`);
    throw err;
  }
});

function countChatLines(chat, text) {
  return chat.page.evaluate(
    (text) => [...document.querySelectorAll('#messages li.chat')].filter((li) => li.children[1]?.textContent === text).length,
    text,
  );
}

/** Both pages, full page, side by side in one PNG: A on the left, B on the right. */
async function screenshot(a, b) {
  fs.mkdirSync(outputDir, { recursive: true });
  const shots = [];
  for (const c of [a, b]) {
    // The message list scrolls inside a page of window height: grow the
    // window until the whole conversation fits, then take the full page.
    const { width, height } = c.page.viewportSize();
    const hidden = await c.page.evaluate(() => {
      const list = document.getElementById('messages');
      return Math.max(0, list.scrollHeight - list.clientHeight);
    });
    await c.page.setViewportSize({ width, height: height + hidden });
    shots.push((await c.page.screenshot({ fullPage: true, animations: 'disabled' })).toString('base64'));
  }
  // Compose them in a third page of A's context (no extra dependency for images).
  const page = await a.context.newPage();
  try {
    await page.setViewportSize({ width: 1560, height: 700 });
    await page.setContent(
      `<body style="margin:0;display:flex;align-items:flex-start;gap:16px;padding:16px;background:#d8dbe0;font:14px system-ui">` +
        shots
          .map(
            (s, i) =>
              `<figure style="margin:0"><figcaption style="margin:0 0 6px 4px">${['page A (alice)', 'page B (bob)'][i]}</figcaption>` +
              `<img src="data:image/png;base64,${s}" style="display:block"></figure>`,
          )
          .join('') +
        `</body>`,
    );
    await page.waitForFunction(() => [...document.images].every((img) => img.complete && img.naturalWidth > 0));
    await page.screenshot({ path: screenshotPath, fullPage: true });
  } finally {
    await page.close();
  }
}
