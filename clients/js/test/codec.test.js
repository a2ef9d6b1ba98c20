// The v1 packet codec (spec §2): documented layouts, round trips, and
// malformed input rejected with a reason instead of a throw.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cmd, DecodeError, decodeData, decodePacket, encodeData, encodePacket } from '../rainbow.js';

const bytes = (...values) => Uint8Array.from(values);
const ascii = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const concat = (a, b) => Uint8Array.from([...a, ...b]);

const send = (qos, id, dup, payload) => ({ cmd: Cmd.SEND, type: 0x0102, qos, id, dup, payload: ascii(payload) });

/** Decodes and asserts success. */
function decodeOk(input) {
  const result = decodePacket(input);
  assert.equal(result.ok, true, result.error?.message);
  return result.packet;
}

test('encodes the documented layout (same vectors as the Rust crate)', () => {
  assert.deepEqual(encodePacket(send(0, 0, false, 'hi')), concat(bytes(0x10, 0x01, 0x02), ascii('hi')));
  assert.deepEqual(encodePacket(send(1, 7, false, '')), bytes(0x12, 0x01, 0x02, 0x00, 0x07));
  assert.deepEqual(encodePacket(send(2, 0xabcd, true, 'x')), bytes(0x1c, 0x01, 0x02, 0xab, 0xcd, 0x78));
  assert.deepEqual(encodePacket({ cmd: Cmd.ACK, id: 1, payload: ascii('{}') }), bytes(0x20, 0x00, 0x01, 0x7b, 0x7d));
  assert.deepEqual(encodePacket({ cmd: Cmd.REC, id: 2 }), bytes(0x30, 0x00, 0x02));
  assert.deepEqual(encodePacket({ cmd: Cmd.REL, id: 3 }), bytes(0x40, 0x00, 0x03));
  assert.deepEqual(encodePacket({ cmd: Cmd.COM, id: 65534 }), bytes(0x50, 0xff, 0xfe));
});

test('a qos-0 SEND carries no message id', () => {
  const packet = decodeOk(bytes(0x10, 0x00, 0x05, 0x61));
  assert.deepEqual(packet, { cmd: Cmd.SEND, type: 5, qos: 0, id: 0, dup: false, payload: ascii('a') });
});

test('decode inverts encode for random packets', () => {
  let seed = 42;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31; // deterministic LCG
    return seed % n;
  };
  for (let i = 0; i < 2000; i++) {
    const payload = Uint8Array.from({ length: rand(64) }, () => rand(256));
    const id = 1 + rand(0xffff);
    let packet;
    switch (1 + rand(5)) {
      case Cmd.SEND: {
        const qos = rand(3);
        packet = { cmd: Cmd.SEND, type: rand(0x10000), qos, id: qos === 0 ? 0 : id, dup: rand(2) === 1, payload };
        break;
      }
      case Cmd.ACK:
        packet = { cmd: Cmd.ACK, id, payload };
        break;
      case Cmd.REC:
        packet = { cmd: Cmd.REC, id, payload };
        break;
      case Cmd.REL:
        packet = { cmd: Cmd.REL, id };
        break;
      default:
        packet = { cmd: Cmd.COM, id };
    }
    const wire = encodePacket(packet);
    assert.deepEqual(decodeOk(wire), packet);
    // The same bytes arriving as an ArrayBuffer (what the browser delivers).
    assert.deepEqual(decodeOk(wire.slice().buffer), packet);
  }
});

test('malformed packets are rejected with a DecodeError naming the fault', () => {
  const cases = [
    [bytes(), 'empty'],
    [bytes(0x00, 0x00, 0x01), 'unknown_command'],
    [bytes(0x60, 0x00, 0x01), 'unknown_command'],
    [bytes(0xf0), 'unknown_command'],
    [bytes(0x16, 0x00, 0x01, 0x00, 0x01), 'invalid_qos'],
    [bytes(0x10, 0x00), 'truncated'],
    [bytes(0x12, 0x00, 0x01, 0x00), 'truncated'],
    [bytes(0x20, 0x00), 'truncated'],
    [bytes(0x50), 'truncated'],
    [bytes(0x14, 0x00, 0x01, 0x00, 0x00), 'zero_message_id'],
    [bytes(0x20, 0x00, 0x00), 'zero_message_id'],
    [bytes(0x40, 0x00, 0x00), 'zero_message_id'],
    [bytes(0x40, 0x00, 0x01, 0x00), 'trailing_bytes'],
    ['not bytes', 'not_bytes'],
    [null, 'not_bytes'],
    [undefined, 'not_bytes'],
    [{ length: 3 }, 'not_bytes'],
  ];
  for (const [input, kind] of cases) {
    const result = decodePacket(input);
    assert.equal(result.ok, false, `${kind}: ${String(input)}`);
    assert.ok(result.error instanceof DecodeError);
    assert.equal(result.error.kind, kind);
    assert.equal(result.error.code, 'PROTOCOL');
    assert.ok(result.error.message.length > 0);
  }
  assert.match(decodePacket(bytes(0x12, 0x00, 0x01, 0x00)).error.message, /SEND packet truncated: needs 5 bytes, got 4/);
});

test('bits the original ignored are ignored', () => {
  // Reserved bit 0 set on a SEND, and dup/qos bits on an ACK.
  assert.deepEqual(decodeOk(bytes(0x11, 0x00, 0x05, 0x61, 0x62, 0x63)), {
    cmd: Cmd.SEND,
    type: 5,
    qos: 0,
    id: 0,
    dup: false,
    payload: ascii('abc'),
  });
  assert.deepEqual(decodeOk(bytes(0x2d, 0x00, 0x09)), { cmd: Cmd.ACK, id: 9, payload: bytes() });
});

test('decoding never throws, whatever the bytes', () => {
  let seed = 7;
  for (let i = 0; i < 20000; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const input = Uint8Array.from({ length: seed % 12 }, (_, k) => (seed >> k) & 0xff);
    const result = decodePacket(input);
    if (result.ok) {
      // Whatever decodes re-encodes to a packet that decodes the same.
      assert.deepEqual(decodeOk(encodePacket(result.packet)), result.packet);
    } else {
      assert.ok(result.error instanceof DecodeError);
    }
  }
});

test('encoding a malformed packet object is a caller bug and throws', () => {
  assert.throws(() => encodePacket({ cmd: 9, id: 1 }), RangeError);
  assert.throws(() => encodePacket({ cmd: Cmd.SEND, type: 70000, qos: 0 }), RangeError);
  assert.throws(() => encodePacket({ cmd: Cmd.SEND, type: 1, qos: 3, id: 1 }), RangeError);
  assert.throws(() => encodePacket({ cmd: Cmd.SEND, type: 1, qos: 1, id: 0 }), RangeError);
  assert.throws(() => encodePacket({ cmd: Cmd.ACK, id: 0 }), RangeError);
  assert.throws(() => encodePacket({ cmd: Cmd.ACK, id: 1, payload: 'text' }), TypeError);
});

test('application payloads: JSON, text, binary and empty', () => {
  assert.deepEqual(decodeData(encodeData({ message: 'héllo', n: [1, 2] })), { message: 'héllo', n: [1, 2] });
  assert.equal(decodeData(encodeData('a string')), 'a string'); // strings are JSON-encoded too
  assert.equal(new TextDecoder().decode(encodeData('a')), '"a"');
  assert.equal(decodeData(ascii('not json {')), 'not json {');
  assert.equal(decodeData(bytes()), '');
  assert.deepEqual(encodeData(undefined), bytes());
  const binary = bytes(1, 2, 3);
  const encoded = encodeData(binary);
  assert.deepEqual(encoded, binary);
  assert.notEqual(encoded, binary, 'binary payloads are copied');
  assert.deepEqual(encodeData(binary.buffer), binary);
  assert.throws(() => encodeData({ big: 1n }), TypeError);
});
