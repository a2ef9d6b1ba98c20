// End to end: the Rainbow client over real WebSockets (the `ws` package)
// against a gateway scripted by each test on 127.0.0.1. Timers run on a fake
// clock, so retransmits, timeouts and reconnect delays happen exactly when a
// test advances time; everything else waits on events, never on sleeps.

import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Cmd, Rainbow } from '../rainbow.js';
import { FakeClock, nextEvent, startGateway, text, utf8 } from './helpers.js';

/** Every end-to-end test fails (instead of hanging) if an awaited packet never comes. */
const e2e = (name, fn) => test(name, { timeout: 10_000 }, fn);

let gateway;
let clock;
let clients;

beforeEach(async () => {
  gateway = await startGateway();
  clock = new FakeClock();
  clients = [];
});

afterEach(async () => {
  for (const rb of clients) rb.close();
  await gateway.close();
});

/** A client for the current gateway; errors are collected in `rb.errors`. */
function client(options = {}) {
  const rb = new Rainbow(gateway.url, { WebSocket, clock, deviceId: 'device-1', os: 'test', ...options });
  rb.errors = [];
  rb.on('error', (err) => rb.errors.push(err));
  clients.push(rb);
  return rb;
}

/** Opens a client and returns it with its server-side connection. */
async function connected(options) {
  const rb = client(options);
  const opened = nextEvent(rb, 'open');
  rb.open();
  const conn = await gateway.connection();
  await opened;
  return { rb, conn };
}

e2e('connects to /connect/ with X-DEVICEID, X-CLIENT-OS and the params', async () => {
  const { rb, conn } = await connected({ params: { token: 't0k' } });
  assert.equal(rb.state, 'open');
  assert.equal(conn.url.pathname, '/connect/');
  assert.equal(conn.url.searchParams.get('X-DEVICEID'), 'device-1');
  assert.equal(conn.url.searchParams.get('X-CLIENT-OS'), 'test');
  assert.equal(conn.url.searchParams.get('token'), 't0k');
});

e2e('send at qos 0, 1 and 2 with replies', async () => {
  const { rb, conn } = await connected();

  // qos 0: no id, resolves once written, nothing comes back.
  assert.equal(await rb.send(5, { hello: 'world' }, { qos: 0 }), undefined);
  const q0 = await conn.next();
  assert.deepEqual({ ...q0, payload: text(q0.payload) }, {
    cmd: Cmd.SEND,
    type: 5,
    qos: 0,
    id: 0,
    dup: false,
    payload: '{"hello":"world"}',
  });

  // qos 1: SEND -> ACK(reply), the reply decoded as JSON.
  const one = rb.send(1, { id: 100 }, { qos: 1 });
  const s1 = await conn.next();
  assert.equal(s1.qos, 1);
  assert.equal(s1.id, 1);
  assert.equal(s1.dup, false);
  assert.deepEqual(JSON.parse(text(s1.payload)), { id: 100 });
  conn.reply(s1, '{"name":"jeff"}');
  assert.deepEqual(await one, { name: 'jeff' });

  // qos 2: SEND -> REC(reply) -> REL -> COM.
  const two = rb.send(2, 'exactly once', { qos: 2 });
  const s2 = await conn.next();
  assert.equal(s2.qos, 2);
  assert.equal(s2.id, 2);
  conn.reply(s2, 'plain text reply');
  assert.equal(await two, 'plain text reply');
  assert.deepEqual(await conn.next(), { cmd: Cmd.REL, id: 2 });
  conn.write({ cmd: Cmd.COM, id: 2 });

  // Binary in, binary out; an empty reply to JSON is ''.
  const bin = rb.send(3, Uint8Array.of(0, 1, 255));
  const s3 = await conn.next();
  assert.deepEqual(s3.payload, Uint8Array.of(0, 1, 255));
  conn.reply(s3, Uint8Array.of(9, 8));
  const binReply = await bin;
  assert.ok(binReply instanceof Uint8Array);
  assert.deepEqual(binReply, Uint8Array.of(9, 8));
  const empty = rb.send(4, null);
  const s4 = await conn.next();
  assert.equal(text(s4.payload), 'null');
  conn.reply(s4, '');
  assert.equal(await empty, '');

  assert.equal(rb.pending, 0);
  assert.deepEqual(rb.errors, []);
});

e2e('server messages are delivered and answered with the handler return value', async () => {
  const { rb, conn } = await connected();
  const seen = [];
  rb.on('message', (type, data, meta) => {
    seen.push([type, data, meta.qos, meta.dup]);
    if (type === 1002) return { got: data.message };
    if (type === 1003) return Promise.resolve({ async: true });
    if (type === 1004) return Uint8Array.of(7, 7);
    return undefined;
  });

  conn.sendJson(1001, { name: 'jeff', identity: 'abc' }, { qos: 0 });
  conn.sendJson(1002, { message: 'hi' }, { qos: 1, id: 10 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.ACK, id: 10, payload: utf8('{"got":"hi"}') });

  conn.sendJson(1003, {}, { qos: 2, id: 11 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.REC, id: 11, payload: utf8('{"async":true}') });
  conn.write({ cmd: Cmd.REL, id: 11 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.COM, id: 11 });

  conn.sendJson(1004, 'bin', { qos: 1, id: 12 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.ACK, id: 12, payload: Uint8Array.of(7, 7) });

  conn.sendJson(1005, [1, 2], { qos: 1, id: 13 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.ACK, id: 13, payload: new Uint8Array(0) });

  // A non-JSON payload is handed over as text, with the raw bytes in meta.
  const raw = nextEvent(rb, 'message');
  conn.write({ cmd: Cmd.SEND, type: 9, qos: 0, id: 0, dup: false, payload: utf8('not json') });
  const [type, data, meta] = await raw;
  assert.deepEqual([type, data, meta.raw], [9, 'not json', utf8('not json')]);

  assert.deepEqual(seen.slice(0, 5), [
    [1001, { name: 'jeff', identity: 'abc' }, 0, false],
    [1002, { message: 'hi' }, 1, false],
    [1003, {}, 2, false],
    [1004, 'bin', 1, false],
    [1005, [1, 2], 1, false],
  ]);
  assert.deepEqual(rb.errors, []);
});

e2e('a duplicate server qos-2 message is not delivered twice; the cached REC is re-sent', async () => {
  const { rb, conn } = await connected();
  const delivered = [];
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  rb.on('message', async (type, data) => {
    delivered.push(data.n);
    if (type === 1) await gate; // type 1 is still being processed when its duplicate arrives
    return { processed: data.n };
  });

  conn.sendJson(1, { n: 1 }, { qos: 2, id: 7 });
  conn.sendJson(1, { n: 1 }, { qos: 2, id: 7, dup: true }); // swallowed: no reply known yet
  // The marker's ACK proves the client has read both SENDs (same TCP stream, in order).
  conn.sendJson(2, { n: 2 }, { qos: 1, id: 8 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.ACK, id: 8, payload: utf8('{"processed":2}') });
  release();
  assert.deepEqual(await conn.next(), { cmd: Cmd.REC, id: 7, payload: utf8('{"processed":1}') });

  // The REC was "lost": the server retransmits, the client answers from its cache.
  conn.sendJson(1, { n: 1 }, { qos: 2, id: 7, dup: true });
  assert.deepEqual(await conn.next(), { cmd: Cmd.REC, id: 7, payload: utf8('{"processed":1}') });
  assert.deepEqual(delivered, [1, 2], 'the qos-2 message reached the app once');

  // After REL the id is released: the next message with it is new.
  conn.write({ cmd: Cmd.REL, id: 7 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.COM, id: 7 });
  conn.sendJson(1, { n: 3 }, { qos: 2, id: 7 });
  assert.deepEqual(await conn.next(), { cmd: Cmd.REC, id: 7, payload: utf8('{"processed":3}') });
  assert.deepEqual(delivered, [1, 2, 3]);
});

e2e('a failing handler is reported and leaves the message unanswered, so the retransmission is processed', async () => {
  const { rb, conn } = await connected();
  let calls = 0;
  rb.on('message', () => {
    calls += 1;
    if (calls === 1) throw new Error('database down');
    return 'ok';
  });
  const failed = nextEvent(rb, 'error');
  conn.sendJson(1, {}, { qos: 2, id: 3 });
  const [err] = await failed;
  assert.equal(err.code, 'HANDLER');
  assert.equal(err.cause.message, 'database down');
  conn.sendJson(1, {}, { qos: 2, id: 3, dup: true });
  assert.deepEqual(await conn.next(), { cmd: Cmd.REC, id: 3, payload: utf8('"ok"') });
  assert.equal(calls, 2);
});

e2e('unanswered sends are retransmitted with DUP every 3 s', async () => {
  const { rb, conn } = await connected();
  const reply = rb.send(1, { x: 1 }, { qos: 2, timeout: 10_000 });
  const first = await conn.next();
  assert.equal(first.dup, false);
  clock.advance(2999);
  clock.advance(1);
  const again = await conn.next();
  assert.deepEqual(again, { ...first, dup: true });
  clock.advance(3000);
  assert.deepEqual(await conn.next(), { ...first, dup: true });
  conn.reply(again, '"done"');
  assert.equal(await reply, 'done');
  // The REL is retransmitted until COM too.
  assert.deepEqual(await conn.next(), { cmd: Cmd.REL, id: first.id });
  clock.advance(3000);
  assert.deepEqual(await conn.next(), { cmd: Cmd.REL, id: first.id });
  conn.write({ cmd: Cmd.COM, id: first.id });
});

e2e('a send that gets no answer rejects with TIMEOUT', async () => {
  const { rb, conn } = await connected();
  const reply = rb.send(1, {}, { qos: 1, timeout: 5000 });
  await conn.next();
  clock.advance(4999);
  assert.equal(rb.pending, 1);
  clock.advance(1);
  await assert.rejects(reply, (err) => err.code === 'TIMEOUT' && /within 5000 ms/.test(err.message));
  assert.equal(rb.pending, 0);
  // A late ACK is harmless.
  conn.write({ cmd: Cmd.ACK, id: 1, payload: utf8('late') });
  assert.equal(await rb.send(2, {}, { qos: 0 }), undefined);
});

e2e('a cut connection: the client reconnects and retransmits the unanswered qos-1 send with DUP', async () => {
  const { rb, conn } = await connected({ reconnect: { min: 200, max: 5000, factor: 2, jitter: 0 } });
  const reply = rb.send(1, { important: true }, { qos: 1, timeout: 30_000 });
  const original = await conn.next();
  assert.equal(original.dup, false);

  const closed = nextEvent(rb, 'close');
  const reconnecting = nextEvent(rb, 'reconnecting');
  conn.cut();
  const [closeErr, closeInfo] = await closed;
  assert.equal(closeErr.code, 'DISCONNECTED');
  assert.equal(closeInfo.reconnecting, true);
  const [{ attempt, delay }] = await reconnecting;
  assert.deepEqual({ attempt, delay }, { attempt: 1, delay: 200 });
  assert.equal(rb.state, 'reconnecting');

  // Sent while disconnected: queued, written after the retransmission.
  const queued = rb.send(2, { later: true }, { qos: 1 });

  const reopened = nextEvent(rb, 'open');
  clock.advance(delay);
  const conn2 = await gateway.connection();
  await reopened;
  const retransmitted = await conn2.next();
  assert.equal(retransmitted.dup, true);
  assert.equal(retransmitted.type, 1);
  assert.equal(retransmitted.id, 1, 'ids are per connection');
  assert.deepEqual(retransmitted.payload, original.payload);
  const next = await conn2.next();
  assert.deepEqual([next.type, next.id, next.dup], [2, 2, false]);

  conn2.reply(retransmitted, '{"stored":true}');
  conn2.reply(next, '{"ok":1}');
  assert.deepEqual(await reply, { stored: true });
  assert.deepEqual(await queued, { ok: 1 });
  assert.equal(rb.state, 'open');
});

e2e('the queue is bounded: a full queue rejects the new send with QUEUE_FULL', async () => {
  const rb = client({ maxPending: 3 });
  const sends = [rb.send(1, 'a'), rb.send(1, 'b', { qos: 0 }), rb.send(1, 'c', { qos: 2 })];
  await assert.rejects(rb.send(1, 'd'), (err) => err.code === 'QUEUE_FULL' && err instanceof Error);
  assert.equal(rb.pending, 3);

  // Queued before open(), written in order once connected.
  rb.open();
  const conn = await gateway.connection();
  const packets = [await conn.next(), await conn.next(), await conn.next()];
  assert.deepEqual(
    packets.map((p) => [text(p.payload), p.qos, p.id]),
    [['"a"', 1, 1], ['"b"', 0, 0], ['"c"', 2, 2]],
  );
  conn.reply(packets[0], '1');
  conn.reply(packets[2], '3');
  assert.deepEqual(await Promise.all(sends), [1, undefined, 3]);
  assert.equal(rb.pending, 0);
  await rb.send(1, 'e', { qos: 0 }); // room again
});

e2e('close() rejects pending sends with CLOSED and does not reconnect', async () => {
  const { rb, conn } = await connected();
  const reply = rb.send(1, {}, { qos: 1 });
  await conn.next();
  rb.close();
  await assert.rejects(reply, { code: 'CLOSED' });
  const { code } = await conn.closed;
  assert.equal(code, 1000);
  assert.equal(clock.armed, 0, 'no timer left armed');
  assert.equal(rb.state, 'closed');
});

e2e('a malformed packet from the server is an error: the client closes with 1002 and reconnects', async () => {
  const { rb, conn } = await connected({ reconnect: { min: 10, jitter: 0 } });
  const failed = nextEvent(rb, 'error');
  const reconnecting = nextEvent(rb, 'reconnecting');
  conn.write(Uint8Array.of(0x60, 0x00, 0x01)); // unknown command 6
  const [err] = await failed;
  assert.equal(err.code, 'PROTOCOL');
  assert.equal(err.kind, 'unknown_command');
  assert.equal((await conn.closed).code, 1002);
  const [{ delay }] = await reconnecting;
  clock.advance(delay);
  const conn2 = await gateway.connection();
  conn2.sendJson(1, 'still works', { qos: 1, id: 1 });
  assert.deepEqual(await conn2.next(), { cmd: Cmd.ACK, id: 1, payload: new Uint8Array(0) });
});

e2e('a refused handshake (no X-DEVICEID) is retried with backoff', async () => {
  const rb = client({ deviceId: '' }); // the scripted gateway refuses an empty device id with 401
  const reconnecting = nextEvent(rb, 'reconnecting');
  rb.open();
  const [{ attempt }] = await reconnecting;
  assert.equal(attempt, 1);
  assert.ok(rb.errors.some((err) => /401/.test(err.message)), rb.errors.map((e) => e.message).join('; '));
});
