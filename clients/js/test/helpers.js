// Test helpers: a fake clock, an event waiter, and a scripted gateway built on
// the `ws` package that speaks the v1 packets and lets each test play the
// server side step by step.

import { WebSocketServer } from 'ws';
import { Cmd, decodePacket, encodePacket } from '../rainbow.js';

/**
 * A manual clock with the { now, setTimeout, clearTimeout } shape Rainbow
 * accepts as `options.clock`. Time moves only through advance().
 */
export class FakeClock {
  #now = 1_000_000;
  #timers = new Map();
  #nextHandle = 1;

  now() {
    return this.#now;
  }

  setTimeout(fn, ms) {
    const handle = this.#nextHandle++;
    this.#timers.set(handle, { at: this.#now + Math.max(0, ms), fn });
    return handle;
  }

  clearTimeout(handle) {
    this.#timers.delete(handle);
  }

  /** How many timers are armed. */
  get armed() {
    return this.#timers.size;
  }

  /**
   * Moves time forward by `ms`, running every timer that falls due, in order.
   * Throws if timers keep re-arming themselves (a busy loop in the code under test).
   */
  advance(ms) {
    const target = this.#now + ms;
    for (let runs = 0; ; runs++) {
      if (runs > 10_000) throw new Error('FakeClock: more than 10000 timers ran in one advance(): a timer loop?');
      let due = null;
      for (const [handle, timer] of this.#timers) {
        if (timer.at <= target && (due === null || timer.at < due[1].at)) due = [handle, timer];
      }
      if (due === null) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].fn();
    }
    this.#now = target;
  }
}

/** Resolves with the arguments of the next `event` emitted by a Rainbow client. */
export function nextEvent(rb, event) {
  return new Promise((resolve) => {
    const fn = (...args) => {
      rb.off(event, fn);
      resolve(args);
    };
    rb.on(event, fn);
  });
}

/** An async FIFO: push() values, await shift() them in order. */
class Queue {
  #items = [];
  #waiters = [];

  push(value) {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(value);
    else this.#items.push(value);
  }

  shift() {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  get length() {
    return this.#items.length;
  }
}

/** One client connection as the scripted gateway sees it. */
export class ServerConnection {
  constructor(ws, request) {
    this.ws = ws;
    this.url = new URL(request.url, 'ws://127.0.0.1');
    this.packets = new Queue();
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
    // A bad frame from the client is queued as an Error so the test awaiting
    // the next packet fails with it.
    ws.on('message', (data, isBinary) => {
      if (!isBinary) return this.packets.push(new Error(`client sent a text frame: ${data}`));
      const result = decodePacket(new Uint8Array(data));
      this.packets.push(result.ok ? result.packet : result.error);
    });
  }

  /** The next packet the client sent (rejects if it was not a valid packet). */
  async next() {
    const packet = await this.packets.shift();
    if (packet instanceof Error) throw packet;
    return packet;
  }

  /** Writes a packet object (or raw bytes) to the client. */
  write(packet) {
    this.ws.send(packet instanceof Uint8Array ? packet : encodePacket(packet));
  }

  /** Answers a SEND with ACK (qos 1) or REC (qos 2) carrying `reply` (a string or bytes). */
  reply(send, reply = '') {
    const payload = typeof reply === 'string' ? new TextEncoder().encode(reply) : reply;
    this.write({ cmd: send.qos === 2 ? Cmd.REC : Cmd.ACK, id: send.id, payload });
  }

  /** Sends a SEND to the client with a JSON payload. */
  sendJson(type, value, { qos = 1, id = 1, dup = false } = {}) {
    const payload = new TextEncoder().encode(JSON.stringify(value));
    this.write({ cmd: Cmd.SEND, type, qos, id: qos === 0 ? 0 : id, dup, payload });
  }

  /** Cuts the TCP connection without a closing handshake. */
  cut() {
    this.ws.terminate();
  }
}

/**
 * Starts a scripted gateway on 127.0.0.1 (port 0). Await `connection()` for
 * each client connection, in order. Like the real gateway it refuses a
 * handshake without X-DEVICEID and X-CLIENT-OS.
 */
export async function startGateway() {
  const connections = new Queue();
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    verifyClient: ({ req }, done) => {
      const url = new URL(req.url, 'ws://127.0.0.1');
      const ok = url.pathname === '/connect/' && url.searchParams.get('X-DEVICEID') && url.searchParams.get('X-CLIENT-OS');
      done(Boolean(ok), 401);
    },
  });
  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  server.on('connection', (ws, request) => connections.push(new ServerConnection(ws, request)));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}`,
    port,
    connection: () => connections.shift(),
    close: () =>
      new Promise((resolve) => {
        for (const client of server.clients) client.terminate();
        server.close(() => resolve());
      }),
  };
}

export const utf8 = (text) => new TextEncoder().encode(text);
export const text = (bytes) => new TextDecoder().decode(bytes);
