// The sans-IO QoS machines: Outbound (sender: ids, DUP retransmits,
// deadlines, REL/COM) and Inbound (receiver: the qos-2 dedup window).
// Time is a plain number passed in, so these tests need no timers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cmd, Inbound, MAX_MESSAGE_ID, Outbound } from '../rainbow.js';

const T0 = 1_000_000;
const s = (n) => n * 1000;
const bytes = (text) => new TextEncoder().encode(text);

const sendAt = (out, now, { qos = 1, deadline = now + s(10), tag = 'a', payload = bytes('x'), dup } = {}) =>
  out.send(now, { type: 7, qos, payload, deadline, tag, dup });

// -- Outbound ---------------------------------------------------------------

test('outbound: qos 0 is not tracked', () => {
  const out = new Outbound();
  const packet = sendAt(out, T0, { qos: 0 });
  assert.equal(packet.id, 0);
  assert.equal(out.inFlight, 0);
  assert.equal(out.nextDeadline(), null);
});

test('outbound: qos 1 retransmits with DUP every 3 s until acked', () => {
  const out = new Outbound();
  const packet = sendAt(out, T0);
  assert.equal(packet.id, 1);
  assert.equal(packet.dup, false);
  assert.equal(out.nextDeadline(), T0 + s(3));

  assert.deepEqual(out.onTimeout(T0 + s(2)), []);
  const fired = out.onTimeout(T0 + s(3));
  assert.equal(fired.length, 1);
  assert.equal(fired[0].kind, 'retransmit');
  assert.deepEqual(fired[0].packet, { ...packet, dup: true });
  assert.equal(out.nextDeadline(), T0 + s(6));
  assert.equal(out.onTimeout(T0 + s(6))[0].packet.dup, true);

  assert.deepEqual(out.onAck(1, bytes('reply')), { tag: 'a', payload: bytes('reply') });
  assert.equal(out.inFlight, 0);
  assert.equal(out.onAck(1, bytes('')), null, 'a second ACK resolves nothing');
  assert.equal(out.onAck(999), null, 'an unknown id resolves nothing');
});

test('outbound: a retransmission from an earlier connection is written with DUP', () => {
  const out = new Outbound();
  assert.equal(sendAt(out, T0, { dup: true }).dup, true);
});

test('outbound: unanswered sends expire at their deadline', () => {
  const out = new Outbound();
  sendAt(out, T0, { qos: 2, deadline: T0 + s(4), tag: 42 });
  assert.equal(out.onTimeout(T0 + s(3))[0].kind, 'retransmit');
  assert.deepEqual(out.onTimeout(T0 + s(4)), [{ kind: 'expired', tag: 42 }]);
  assert.equal(out.inFlight, 0);
  assert.equal(out.nextDeadline(), null);
});

test('outbound: qos 2 runs REC -> REL -> COM', () => {
  const out = new Outbound();
  const { id } = sendAt(out, T0, { qos: 2, tag: 'q' });
  assert.equal(out.onAck(id), null, 'an ACK does not answer a qos-2 SEND');

  const first = out.onRec(T0, id, bytes('r'));
  assert.deepEqual(first, { answered: { tag: 'q', payload: bytes('r') }, rel: { cmd: Cmd.REL, id } });
  // A repeated REC is answered with REL again but resolves nothing.
  assert.deepEqual(out.onRec(T0, id), { answered: null, rel: { cmd: Cmd.REL, id } });
  // A REC for an id we do not know still gets its REL.
  assert.deepEqual(out.onRec(T0, 500), { answered: null, rel: { cmd: Cmd.REL, id: 500 } });
  // REL is retransmitted until COM.
  assert.deepEqual(out.onTimeout(T0 + s(3)), [{ kind: 'retransmit', packet: { cmd: Cmd.REL, id } }]);
  assert.equal(out.inFlight, 1);
  out.onCom(id);
  assert.equal(out.inFlight, 0);
});

test('outbound: a REL without COM is released silently', () => {
  const out = new Outbound();
  const { id } = sendAt(out, T0, { qos: 2 });
  out.onRec(T0, id);
  assert.deepEqual(out.onTimeout(T0 + s(11)), []);
  assert.equal(out.inFlight, 0);
});

test('outbound: ids wrap from 65534 to 1 and skip ids in flight', () => {
  const far = T0 + s(1000);
  const out = new Outbound({ maxInFlight: 10 });
  assert.equal(sendAt(out, T0, { deadline: far }).id, 1); // stays in flight
  for (let expected = 2; expected <= MAX_MESSAGE_ID; expected++) {
    const { id } = sendAt(out, T0, { deadline: far });
    assert.equal(id, expected);
    assert.notEqual(out.onAck(id), null);
  }
  // Id 1 is still in flight, so the wrap skips it; 0 and 65535 are never used.
  assert.equal(sendAt(out, T0, { deadline: far }).id, 2);
});

test('outbound: in-flight is bounded; drain returns unanswered tags in order', () => {
  const out = new Outbound({ maxInFlight: 2 });
  sendAt(out, T0, { tag: 'first' });
  sendAt(out, T0, { tag: 'second' });
  assert.equal(out.hasCapacity(), false);
  assert.throws(() => sendAt(out, T0), { code: 'IN_FLIGHT_FULL' });
  assert.equal(sendAt(out, T0, { qos: 0 }).qos, 0, 'qos 0 needs no slot');
  assert.deepEqual(out.drain(), ['first', 'second']);
  assert.equal(out.inFlight, 0);
  assert.throws(() => new Outbound({ maxInFlight: MAX_MESSAGE_ID + 1 }), RangeError);
});

// -- Inbound ----------------------------------------------------------------

const inSend = (qos, id, dup = false) => ({ cmd: Cmd.SEND, type: 1, qos, id, dup, payload: bytes('') });

test('inbound: qos 0 and qos 1 are always processed', () => {
  const inb = new Inbound();
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(inb.onSend(T0, inSend(1, 5, true)), { kind: 'process' });
    assert.deepEqual(inb.onSend(T0, inSend(0, 0)), { kind: 'process' });
  }
  assert.equal(inb.unreleased, 0);
  assert.deepEqual(inb.answer(5, 1, bytes('r')), { cmd: Cmd.ACK, id: 5, payload: bytes('r') });
  assert.equal(inb.answer(0, 0, bytes('')), null);
});

test('inbound: a qos-2 duplicate before REL is not processed again; the cached REC is re-sent', () => {
  const inb = new Inbound();
  assert.deepEqual(inb.onSend(T0, inSend(2, 9)), { kind: 'process' });
  // Still processing: the duplicate is swallowed.
  assert.deepEqual(inb.onSend(T0, inSend(2, 9, true)), { kind: 'duplicate', rec: null });
  const rec = inb.answer(9, 2, bytes('once'));
  assert.deepEqual(rec, { cmd: Cmd.REC, id: 9, payload: bytes('once') });
  // Answered: the duplicate gets the same REC again (also without the dup bit).
  assert.deepEqual(inb.onSend(T0, inSend(2, 9, true)), { kind: 'duplicate', rec });
  assert.deepEqual(inb.onSend(T0, inSend(2, 9, false)), { kind: 'duplicate', rec });
  assert.deepEqual(inb.onRel(9), { cmd: Cmd.COM, id: 9 });
  // After REL the id is free: a new message with it is processed.
  assert.deepEqual(inb.onSend(T0, inSend(2, 9)), { kind: 'process' });
});

test('inbound: failed processing lets the retransmission through', () => {
  const inb = new Inbound();
  assert.deepEqual(inb.onSend(T0, inSend(2, 3)), { kind: 'process' });
  inb.failed(3, 2);
  assert.deepEqual(inb.onSend(T0, inSend(2, 3, true)), { kind: 'process' });
});

test('inbound: the window is bounded and evicts only stale ids', () => {
  const inb = new Inbound({ maxUnreleased: 2, maxAge: s(60) });
  inb.onSend(T0, inSend(2, 1));
  inb.onSend(T0, inSend(2, 2));
  assert.deepEqual(inb.onSend(T0, inSend(2, 3)), { kind: 'window-full', size: 2 });
  assert.deepEqual(inb.onSend(T0 + s(61), inSend(2, 3)), { kind: 'process' });
  assert.equal(inb.unreleased, 1);
});

test('inbound: an unknown REL is still completed', () => {
  assert.deepEqual(new Inbound().onRel(77), { cmd: Cmd.COM, id: 77 });
});
