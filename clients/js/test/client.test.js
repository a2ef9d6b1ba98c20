// The Rainbow client without a network: URL building, device id, options,
// events, backoff and close semantics, driven through a fake WebSocket and a
// fake clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEVICE_ID_KEY, Rainbow, buildConnectUrl, decodePacket, defaultDeviceId } from '../rainbow.js';
import { FakeClock } from './helpers.js';

/** A WebSocket stand-in the test opens, fails and closes by hand. */
class FakeWebSocket {
  static instances = [];
  readyState = 0;
  sent = [];

  constructor(url) {
    this.url = url;
    FakeWebSocket.instances.push(this);
  }

  send(data) {
    this.sent.push(data);
  }

  close(code = 1000) {
    this.readyState = 3;
    this.closedWith = code;
  }

  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }

  fail() {
    this.readyState = 3;
    this.onerror?.({ message: 'connect ECONNREFUSED' });
    this.onclose?.({ code: 1006, reason: '', wasClean: false });
  }

  static last() {
    return FakeWebSocket.instances.at(-1);
  }
}

const fakeOptions = (extra = {}) => ({ WebSocket: FakeWebSocket, deviceId: 'dev-1', os: 'test', ...extra });

test('connect URL: /connect/ is added when there is no path, with device id, os and params', { timeout: 5000 }, () => {
  const url = new URL(buildConnectUrl('ws://gw.example:1984', { deviceId: 'd 1', os: 'ios', params: { token: 'abc', n: 2 } }));
  assert.equal(url.origin, 'ws://gw.example:1984');
  assert.equal(url.pathname, '/connect/');
  assert.equal(url.searchParams.get('X-DEVICEID'), 'd 1');
  assert.equal(url.searchParams.get('X-CLIENT-OS'), 'ios');
  assert.equal(url.searchParams.get('token'), 'abc');
  assert.equal(url.searchParams.get('n'), '2');
});

test('connect URL: a full URL keeps its path and query; http(s) and bare hosts become ws(s)', { timeout: 5000 }, () => {
  const full = new URL(buildConnectUrl('wss://gw.example/rainbow/connect/?room=1', { deviceId: 'd', os: 'o' }));
  assert.equal(full.protocol, 'wss:');
  assert.equal(full.pathname, '/rainbow/connect/');
  assert.equal(full.searchParams.get('room'), '1');
  assert.equal(full.searchParams.get('X-DEVICEID'), 'd');
  assert.match(buildConnectUrl('https://gw.example', { deviceId: 'd', os: 'o' }), /^wss:\/\/gw\.example\/connect\/\?/);
  assert.match(buildConnectUrl('localhost:1984', { deviceId: 'd', os: 'o' }), /^ws:\/\/localhost:1984\/connect\/\?/);
  // The user's params cannot override the identity parameters.
  const forced = new URL(buildConnectUrl('ws://h', { deviceId: 'real', os: 'o', params: { 'X-DEVICEID': 'fake' } }));
  assert.deepEqual(forced.searchParams.getAll('X-DEVICEID'), ['real']);
  assert.throws(() => buildConnectUrl('ftp://h', { deviceId: 'd', os: 'o' }), TypeError);
  assert.throws(() => buildConnectUrl('/connect/', { deviceId: 'd', os: 'o' }), /page location/);
});

test('the device id is persisted in localStorage, else random per instance', { timeout: 5000 }, () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const first = defaultDeviceId(storage);
  assert.match(first, /^[0-9a-f]{32}$/);
  assert.equal(store.get(DEVICE_ID_KEY), first);
  assert.equal(defaultDeviceId(storage), first);

  const broken = {
    getItem() {
      throw new Error('SecurityError');
    },
  };
  assert.match(defaultDeviceId(broken), /^[0-9a-f]{32}$/);
  assert.notEqual(defaultDeviceId(null), defaultDeviceId(null));

  // Node has no localStorage: each client gets its own id, sent as X-DEVICEID.
  const a = new Rainbow('ws://h', { WebSocket: FakeWebSocket });
  const b = new Rainbow('ws://h', { WebSocket: FakeWebSocket });
  assert.notEqual(a.deviceId, b.deviceId);
  assert.equal(new URL(a.url).searchParams.get('X-DEVICEID'), a.deviceId);
  assert.equal(new URL(a.url).searchParams.get('X-CLIENT-OS'), 'node');
});

test('the device id uses globalThis.localStorage when it exists', { timeout: 5000 }, (t) => {
  const store = new Map();
  globalThis.localStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  t.after(() => delete globalThis.localStorage);
  const a = new Rainbow('ws://h', { WebSocket: FakeWebSocket });
  const b = new Rainbow('ws://h', { WebSocket: FakeWebSocket });
  assert.equal(a.deviceId, b.deviceId);
  assert.equal(store.get('rainbow.deviceId'), a.deviceId);
});

test('options are validated; on() chains and refuses unknown events', { timeout: 5000 }, () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    assert.throws(() => new Rainbow('ws://h'), /options\.WebSocket/);
  } finally {
    globalThis.WebSocket = saved;
  }
  assert.throws(() => new Rainbow('ws://h', fakeOptions({ maxPending: 0 })), RangeError);
  const rb = new Rainbow('ws://h', fakeOptions());
  const fn = () => {};
  assert.equal(rb.on('open', fn).on('message', fn).on('close', fn).on('error', fn).on('reconnecting', fn), rb);
  assert.equal(rb.off('open', fn), rb);
  assert.throws(() => rb.on('opne', fn), /unknown event "opne"/);
  assert.equal(rb.state, 'idle');
});

test('send rejects bad arguments instead of throwing', { timeout: 5000 }, async () => {
  const rb = new Rainbow('ws://h', fakeOptions());
  await assert.rejects(rb.send(70000, {}), RangeError);
  await assert.rejects(rb.send(1, {}, { qos: 3 }), RangeError);
  await assert.rejects(rb.send(1, {}, { timeout: 0 }), RangeError);
  const cyclic = {};
  cyclic.self = cyclic;
  await assert.rejects(rb.send(1, cyclic), TypeError);
  assert.equal(rb.pending, 0);
});

test('reconnect backs off exponentially up to max, with jitter, and resets after an open', { timeout: 5000 }, () => {
  FakeWebSocket.instances = [];
  const clock = new FakeClock();
  const rb = new Rainbow(
    'ws://h',
    fakeOptions({ clock, random: () => 0.5, reconnect: { min: 100, max: 1000, factor: 2, jitter: 0.2 } }),
  );
  const events = [];
  rb.on('reconnecting', (info) => events.push(info));
  const errors = [];
  rb.on('error', (err) => errors.push(err));
  const closes = [];
  rb.on('close', (err, info) => closes.push([err, info]));

  rb.open();
  assert.equal(rb.state, 'connecting');
  for (let i = 0; i < 6; i++) {
    FakeWebSocket.last().fail();
    assert.equal(rb.state, 'reconnecting');
    clock.advance(events.at(-1).delay);
  }
  // base 100, 200, 400, 800, 1000, 1000, each reduced by jitter * random = 10 %.
  assert.deepEqual(
    events.map((e) => [e.attempt, e.delay]),
    [[1, 90], [2, 180], [3, 360], [4, 720], [5, 900], [6, 900]],
  );
  assert.equal(FakeWebSocket.instances.length, 7);
  assert.equal(errors.length, 6);
  assert.equal(errors[0].message, 'connect ECONNREFUSED');
  assert.equal(closes[0][0].code, 'DISCONNECTED');
  assert.equal(closes[0][1].reconnecting, true);

  FakeWebSocket.last().accept();
  assert.equal(rb.state, 'open');
  FakeWebSocket.last().onclose({ code: 1001, reason: 'going away', wasClean: true });
  assert.match(closes.at(-1)[0].message, /connection closed \(code 1001: going away\)/);
  assert.deepEqual(events.at(-1), { attempt: 1, delay: 90 });
  rb.close();
});

test('close() stops reconnecting and rejects pending sends with CLOSED', { timeout: 5000 }, async () => {
  FakeWebSocket.instances = [];
  const clock = new FakeClock();
  const rb = new Rainbow('ws://h', fakeOptions({ clock }));
  const closes = [];
  rb.on('close', (err, info) => closes.push([err, info]));
  rb.on('error', () => {});
  rb.open();
  FakeWebSocket.last().fail();
  assert.equal(rb.state, 'reconnecting');
  const pending = rb.send(1, { a: 1 });
  assert.equal(rb.pending, 1);

  rb.close();
  assert.equal(rb.state, 'closed');
  await assert.rejects(pending, { code: 'CLOSED' });
  assert.equal(clock.armed, 0, 'no reconnect or deadline timer is left');
  clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 1, 'no new attempt after close()');
  assert.deepEqual(closes.at(-1), [null, { code: 1000, reason: '', wasClean: true, reconnecting: false }]);
  await assert.rejects(rb.send(1, {}), { code: 'CLOSED' });

  // open() again works.
  rb.open();
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(rb.state, 'connecting');
  rb.close();
  assert.equal(FakeWebSocket.last().closedWith, 1000);
});

test('without reconnect a lost connection rejects pending sends with CLOSED', { timeout: 5000 }, async () => {
  FakeWebSocket.instances = [];
  const rb = new Rainbow('ws://h', fakeOptions({ reconnect: false, clock: new FakeClock() }));
  rb.on('error', () => {});
  rb.open();
  FakeWebSocket.last().accept();
  const pending = rb.send(1, 'x');
  assert.equal(FakeWebSocket.last().sent.length, 1);
  const closed = new Promise((resolve) => rb.on('close', (err, info) => resolve([err, info])));
  FakeWebSocket.last().onclose({ code: 1006, reason: '', wasClean: false });
  await assert.rejects(pending, { code: 'CLOSED' });
  const [err, info] = await closed;
  assert.equal(err.code, 'DISCONNECTED');
  assert.equal(info.reconnecting, false);
  assert.equal(rb.state, 'closed');
});

test('errors thrown by listeners are reported as error events, not thrown into the socket', { timeout: 5000 }, () => {
  FakeWebSocket.instances = [];
  const rb = new Rainbow('ws://h', fakeOptions({ clock: new FakeClock() }));
  const errors = [];
  rb.on('open', () => {
    throw new Error('listener bug');
  });
  rb.on('error', (err) => errors.push(err));
  rb.open();
  assert.doesNotThrow(() => FakeWebSocket.last().accept());
  assert.equal(errors[0].message, 'listener bug');
  rb.close();
});

test('sends queued while disconnected time out too, and never reach the socket', { timeout: 5000 }, async () => {
  FakeWebSocket.instances = [];
  const clock = new FakeClock();
  const rb = new Rainbow('ws://h', fakeOptions({ clock }));
  rb.on('error', () => {});
  const early = rb.send(1, 'queued before open', { timeout: 1000 });
  rb.open();
  FakeWebSocket.last().fail(); // reconnect delay is at least 250 ms
  const late = rb.send(1, 'queued while reconnecting', { timeout: 3000, qos: 0 });
  clock.advance(1000);
  await assert.rejects(early, { code: 'TIMEOUT' });
  assert.equal(rb.pending, 1);
  clock.advance(2000);
  await assert.rejects(late, { code: 'TIMEOUT' });
  assert.equal(rb.pending, 0);
  // The reconnect attempts went on meanwhile; the new socket gets nothing stale.
  FakeWebSocket.last().accept();
  assert.deepEqual(FakeWebSocket.last().sent, []);
  rb.close();
});

/** The JSON payloads a fake socket was sent, in order. */
const sentPayloads = (ws) => ws.sent.map((bytes) => new TextDecoder().decode(decodePacket(bytes).packet.payload));

test("sends made by 'open' listeners are written before the sends queued while disconnected", { timeout: 5000 }, async () => {
  FakeWebSocket.instances = [];
  const clock = new FakeClock();
  const rb = new Rainbow('ws://h', fakeOptions({ clock, reconnect: { min: 100, max: 100, jitter: 0 } }));
  rb.on('error', () => {});
  const sends = [];
  const send = (...args) => sends.push(rb.send(...args).catch((err) => err.code));
  // The app restores its per-connection state (here: a join) on every open.
  rb.on('open', () => {
    assert.deepEqual(FakeWebSocket.last().sent, [], "nothing is written before the 'open' listeners ran");
    send(0, 'join');
    send(7, 'join, second part', { qos: 0 });
  });
  send(1, 'queued before open()');
  send(1, 'queued too', { qos: 0 });
  rb.open();
  FakeWebSocket.last().accept();
  assert.deepEqual(sentPayloads(FakeWebSocket.last()), [
    '"join"',
    '"join, second part"',
    '"queued before open()"',
    '"queued too"',
  ]);

  // Same on a reconnect: the unanswered sends (retransmitted with DUP) and the
  // one queued while disconnected wait for the new join.
  FakeWebSocket.last().fail();
  send(1, 'queued while reconnecting');
  clock.advance(100);
  FakeWebSocket.last().accept();
  const ws = FakeWebSocket.last();
  assert.deepEqual(sentPayloads(ws), ['"join"', '"join, second part"', '"join"', '"queued before open()"', '"queued while reconnecting"']);
  assert.deepEqual(
    ws.sent.map((bytes) => decodePacket(bytes).packet.dup),
    [false, false, true, true, false],
    'the first join and the first queued send were written before: DUP',
  );
  rb.close();
  await Promise.all(sends); // the unanswered ones reject with CLOSED
});

test("an 'open' listener that closes the client keeps the queue off the socket", { timeout: 5000 }, async () => {
  FakeWebSocket.instances = [];
  const rb = new Rainbow('ws://h', fakeOptions({ clock: new FakeClock() }));
  rb.on('error', () => {});
  rb.on('open', () => rb.close());
  const queued = rb.send(1, 'never written');
  rb.open();
  FakeWebSocket.last().accept();
  assert.deepEqual(FakeWebSocket.last().sent, []);
  await assert.rejects(queued, { code: 'CLOSED' });
  assert.equal(rb.state, 'closed');
});
