/**
 * rainbow.js: the JavaScript client of Rainbow, a realtime WebSocket gateway.
 *
 * One self-contained ES module with no imports and no dependencies, so a
 * browser can load it as a single file (`import { Rainbow } from "/rainbow.js"`)
 * and Node can use it with any WHATWG-style WebSocket (the `ws` package).
 *
 * The file has four layers, each usable on its own:
 *
 *   1. Codec      bytes <-> packets of the v1 wire contract (spec §2).
 *   2. Outbound   sans-IO sender half of QoS: id allocation, DUP retransmits,
 *                 deadlines, the REC -> REL -> COM tail.
 *   3. Inbound    sans-IO receiver half of QoS: the qos-2 dedup window.
 *   4. Rainbow    the client: connection, reconnect with backoff, the bounded
 *                 send queue, events, JSON/binary payloads.
 *
 * Layers 2 and 3 mirror the Rust crate `rainbow-protocol` (outbound.rs and
 * inbound.rs): they do no IO and read no clock; the caller passes `now` (ms)
 * in and writes out the packets they return.
 */

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * An error with a stable `code`:
 * - `QUEUE_FULL`  the send queue already holds `maxPending` messages;
 * - `TIMEOUT`     no answer arrived within the send's timeout;
 * - `CLOSED`      the client was closed (or the connection ended for good);
 * - `PROTOCOL`    the peer broke the wire contract (see DecodeError.kind);
 * - `SOCKET`      the WebSocket reported an error;
 * - `DISCONNECTED` an open connection ended unexpectedly (given to 'close');
 * - `HANDLER`     a 'message' handler threw or its reply could not be encoded.
 */
export class RainbowError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {object} [extra] own properties copied onto the error (e.g. `cause`)
   */
  constructor(code, message, extra) {
    super(message, extra && 'cause' in extra ? { cause: extra.cause } : undefined);
    this.name = 'RainbowError';
    this.code = code;
    if (extra) {
      for (const [key, value] of Object.entries(extra)) if (key !== 'cause') this[key] = value;
    }
  }
}

/** Why some bytes are not a v1 packet. `kind` is a short stable label. */
export class DecodeError extends RainbowError {
  /**
   * @param {'empty'|'not_bytes'|'unknown_command'|'invalid_qos'|'truncated'|'zero_message_id'|'trailing_bytes'} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super('PROTOCOL', message, { kind });
    this.name = 'DecodeError';
  }
}

// ---------------------------------------------------------------------------
// 1. Codec (spec §2)
//
//   byte 0   cmd << 4 | dup << 3 | qos << 1      (bit 0 reserved)
//   SEND     u16 message_type, u16 message_id (qos > 0 only), payload
//   ACK/REC  u16 message_id, payload (the reply, may be empty)
//   REL/COM  u16 message_id
//
// Decoding is strict where the spec is precise (unknown command, qos 3,
// truncated bodies, id 0, bytes after a REL/COM id) and lenient where the
// original server was (the reserved bit and the dup/qos bits of packets other
// than SEND are ignored).
// ---------------------------------------------------------------------------

/** Command numbers (the high nibble of byte 0). */
export const Cmd = Object.freeze({ SEND: 1, ACK: 2, REC: 3, REL: 4, COM: 5 });

const CMD_NAMES = ['RESERVED', 'SEND', 'ACK', 'REC', 'REL', 'COM'];

/** The highest message id; ids wrap from here back to 1. 0 is never used. */
export const MAX_MESSAGE_ID = 65534;

const EMPTY = new Uint8Array(0);

const isU16 = (n) => Number.isInteger(n) && n >= 0 && n <= 0xffff;
const isId = (n) => Number.isInteger(n) && n >= 1 && n <= 0xffff;

/**
 * Encodes one packet. Packets are plain objects:
 *   { cmd: Cmd.SEND, type, qos, id, dup, payload }   (id ignored for qos 0)
 *   { cmd: Cmd.ACK | Cmd.REC, id, payload }
 *   { cmd: Cmd.REL | Cmd.COM, id }
 * `payload` is a Uint8Array (absent means empty). ACK/REC/REL/COM are written
 * with qos and dup bits 0, as the original server did.
 *
 * Throws TypeError/RangeError for a malformed packet object: that is a bug in
 * the caller, not in the peer.
 *
 * @returns {Uint8Array}
 */
export function encodePacket(packet) {
  const payload = packet.payload ?? EMPTY;
  if (!(payload instanceof Uint8Array)) throw new TypeError('packet payload must be a Uint8Array');
  const checkId = () => {
    if (!isId(packet.id)) throw new RangeError(`message id must be 1..65535, got ${packet.id}`);
  };
  switch (packet.cmd) {
    case Cmd.SEND: {
      const { type, qos } = packet;
      if (!isU16(type)) throw new RangeError(`message type must be 0..65535, got ${type}`);
      if (qos !== 0 && qos !== 1 && qos !== 2) throw new RangeError(`qos must be 0, 1 or 2, got ${qos}`);
      const fixed = qos === 0 ? 3 : 5;
      const out = new Uint8Array(fixed + payload.length);
      out[0] = (Cmd.SEND << 4) | (packet.dup ? 1 << 3 : 0) | (qos << 1);
      out[1] = type >> 8;
      out[2] = type & 0xff;
      if (qos !== 0) {
        checkId();
        out[3] = packet.id >> 8;
        out[4] = packet.id & 0xff;
      }
      out.set(payload, fixed);
      return out;
    }
    case Cmd.ACK:
    case Cmd.REC:
    case Cmd.REL:
    case Cmd.COM: {
      checkId();
      const body = packet.cmd === Cmd.ACK || packet.cmd === Cmd.REC ? payload : EMPTY;
      const out = new Uint8Array(3 + body.length);
      out[0] = packet.cmd << 4;
      out[1] = packet.id >> 8;
      out[2] = packet.id & 0xff;
      out.set(body, 3);
      return out;
    }
    default:
      throw new RangeError(`unknown packet command ${packet.cmd}`);
  }
}

/** Views any binary value as a Uint8Array without copying, or returns null. */
function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * Parses one packet. Never throws: returns `{ ok: true, packet }` or
 * `{ ok: false, error }` with a DecodeError naming what the peer got wrong.
 * The payload is a zero-copy view into `input`.
 *
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} input
 */
export function decodePacket(input) {
  const bytes = asBytes(input);
  const fail = (kind, message) => ({ ok: false, error: new DecodeError(kind, message) });
  if (!bytes) return fail('not_bytes', 'packet is not binary data');
  if (bytes.length === 0) return fail('empty', 'empty packet');

  const first = bytes[0];
  const cmd = first >> 4;
  if (cmd < Cmd.SEND || cmd > Cmd.COM) return fail('unknown_command', `unknown command ${cmd}`);
  const qos = (first >> 1) & 0b11;
  if (qos === 3) return fail('invalid_qos', 'invalid qos level 3');
  const dup = (first & 0b1000) !== 0;
  const name = CMD_NAMES[cmd];
  const u16At = (at) => (bytes[at] << 8) | bytes[at + 1];
  const truncated = (needed) =>
    fail('truncated', `${name} packet truncated: needs ${needed} bytes, got ${bytes.length}`);
  const zeroId = () => fail('zero_message_id', `${name} packet uses message id 0`);

  switch (cmd) {
    case Cmd.SEND: {
      const fixed = qos === 0 ? 3 : 5;
      if (bytes.length < fixed) return truncated(fixed);
      const id = qos === 0 ? 0 : u16At(3);
      if (qos !== 0 && id === 0) return zeroId();
      const packet = { cmd, type: u16At(1), qos, id, dup, payload: bytes.subarray(fixed) };
      return { ok: true, packet };
    }
    case Cmd.ACK:
    case Cmd.REC: {
      if (bytes.length < 3) return truncated(3);
      const id = u16At(1);
      if (id === 0) return zeroId();
      return { ok: true, packet: { cmd, id, payload: bytes.subarray(3) } };
    }
    default: {
      // REL / COM
      if (bytes.length < 3) return truncated(3);
      if (bytes.length > 3) {
        const extra = bytes.length - 3;
        return fail('trailing_bytes', `${name} packet has ${extra} unexpected trailing bytes`);
      }
      const id = u16At(1);
      if (id === 0) return zeroId();
      return { ok: true, packet: { cmd, id } };
    }
  }
}

// ---------------------------------------------------------------------------
// 2. Outbound: the sender's half of QoS (mirrors outbound.rs)
// ---------------------------------------------------------------------------

/**
 * Sender-side QoS state for one connection and direction.
 *
 * Allocates ids (1..65534, wrapping, skipping ids still in flight), remembers
 * every qos 1/2 SEND until it is answered, retransmits it with dup = 1 every
 * `retransmitInterval` ms until its deadline, and drives the qos-2 tail
 * (REC -> REL -> COM, retransmitting REL until COM arrives or
 * `releaseLifetime` passes). Each SEND carries a caller-chosen `tag` that comes
 * back when it is answered or given up on. All times are milliseconds on the
 * caller's clock.
 */
export class Outbound {
  #retransmitInterval;
  #maxInFlight;
  #releaseLifetime;
  #lastId = 0;
  /**
   * id -> entry, in insertion order (so retransmits go out in send order).
   * entry: { stage: 'reply', send, tag, deadline, nextRetransmit }
   *      | { stage: 'com', until, nextRetransmit }
   */
  #inFlight = new Map();

  constructor({ retransmitInterval = 3000, maxInFlight = 256, releaseLifetime = 10000 } = {}) {
    if (!(retransmitInterval > 0)) throw new RangeError('retransmitInterval must be > 0');
    if (!(maxInFlight >= 1 && maxInFlight <= MAX_MESSAGE_ID)) {
      // More than 65534 would make id allocation loop forever.
      throw new RangeError(`maxInFlight must be 1..${MAX_MESSAGE_ID}`);
    }
    this.#retransmitInterval = retransmitInterval;
    this.#maxInFlight = maxInFlight;
    this.#releaseLifetime = releaseLifetime;
  }

  /** How many ids are in use (awaiting a reply or a COM). */
  get inFlight() {
    return this.#inFlight.size;
  }

  /** Whether another qos > 0 SEND would be accepted now. */
  hasCapacity() {
    return this.#inFlight.size < this.#maxInFlight;
  }

  /**
   * Starts a SEND and returns the packet to write. qos 0 is not tracked.
   * qos 1/2 allocate an id and are remembered until answered or `deadline`.
   * `dup` marks a retransmission of a message first written on an earlier
   * connection. Throws a RainbowError (code IN_FLIGHT_FULL) without capacity:
   * check hasCapacity() first.
   */
  send(now, { type, qos, payload = EMPTY, deadline, tag, dup = false }) {
    if (qos === 0) return { cmd: Cmd.SEND, type, qos, id: 0, dup, payload };
    if (!this.hasCapacity()) {
      throw new RainbowError('IN_FLIGHT_FULL', `${this.#inFlight.size} messages already await an acknowledgement`);
    }
    const id = this.#allocateId();
    const send = { cmd: Cmd.SEND, type, qos, id, dup, payload };
    this.#inFlight.set(id, {
      stage: 'reply',
      send,
      tag,
      deadline,
      nextRetransmit: now + this.#retransmitInterval,
    });
    return send;
  }

  #allocateId() {
    // Terminates: hasCapacity() keeps fewer than 65534 ids in use.
    for (;;) {
      this.#lastId = this.#lastId >= MAX_MESSAGE_ID ? 1 : this.#lastId + 1;
      if (!this.#inFlight.has(this.#lastId)) return this.#lastId;
    }
  }

  /**
   * An ACK arrived. Returns `{ tag, payload }` for the answered SEND, or null
   * for an id we are not waiting on (a late or duplicate ACK: harmless).
   */
  onAck(id, payload = EMPTY) {
    const entry = this.#inFlight.get(id);
    if (!entry || entry.stage !== 'reply' || entry.send.qos !== 1) return null;
    this.#inFlight.delete(id);
    return { tag: entry.tag, payload };
  }

  /**
   * A REC arrived. Always returns the REL to write (the peer may repeat a REC
   * whose REL was lost), and `answered` ({ tag, payload }) the first time.
   */
  onRec(now, id, payload = EMPTY) {
    const rel = { cmd: Cmd.REL, id };
    const entry = this.#inFlight.get(id);
    if (!entry) return { answered: null, rel };
    let answered = null;
    if (entry.stage === 'reply' && entry.send.qos === 2) {
      answered = { tag: entry.tag, payload };
      this.#inFlight.set(id, { stage: 'com', until: now + this.#releaseLifetime, nextRetransmit: 0 });
    }
    this.#inFlight.get(id).nextRetransmit = now + this.#retransmitInterval;
    return { answered, rel };
  }

  /** A COM arrived: the qos-2 exchange is over and its id is free. */
  onCom(id) {
    if (this.#inFlight.get(id)?.stage === 'com') this.#inFlight.delete(id);
  }

  /** The earliest time at which onTimeout() has work, or null if none. */
  nextDeadline() {
    let next = null;
    for (const e of this.#inFlight.values()) {
      const due = Math.min(e.nextRetransmit, e.stage === 'reply' ? e.deadline : e.until);
      if (next === null || due < next) next = due;
    }
    return next;
  }

  /**
   * Runs every timer due at `now`. Returns what to do, in order:
   *   { kind: 'retransmit', packet }  write again (a SEND with dup, or a REL)
   *   { kind: 'expired', tag }        the SEND hit its deadline; its id is free
   */
  onTimeout(now) {
    const actions = [];
    const expired = [];
    for (const [id, e] of this.#inFlight) {
      if ((e.stage === 'reply' ? e.deadline : e.until) <= now) {
        this.#inFlight.delete(id); // deleting the current key while iterating a Map is safe
        if (e.stage === 'reply') expired.push({ kind: 'expired', tag: e.tag });
      } else if (e.nextRetransmit <= now) {
        e.nextRetransmit = now + this.#retransmitInterval;
        actions.push({
          kind: 'retransmit',
          packet: e.stage === 'reply' ? { ...e.send, dup: true } : { cmd: Cmd.REL, id },
        });
      }
    }
    return actions.concat(expired);
  }

  /**
   * Gives up on everything (the connection is gone). Returns the tags of SENDs
   * that were never answered, in send order.
   */
  drain() {
    const tags = [];
    for (const e of this.#inFlight.values()) if (e.stage === 'reply') tags.push(e.tag);
    this.#inFlight.clear();
    return tags;
  }
}

// ---------------------------------------------------------------------------
// 3. Inbound: the receiver's half of QoS (mirrors inbound.rs)
// ---------------------------------------------------------------------------

/**
 * Receiver-side QoS state for one connection and direction.
 *
 * qos 0 and 1 need no memory: a qos-1 SEND is processed every time it arrives
 * (at least once). A qos-2 id is remembered from its SEND until the REL, and a
 * SEND with a remembered id is not processed again, whatever its dup bit says.
 * Once the reply is known it is remembered too, so a duplicate that arrives
 * after our REC (the REC was lost) gets the same REC again.
 *
 * The window is bounded: when full, ids older than `maxAge` ms are dropped
 * first; if it is still full the SEND is refused ('window-full') and the
 * caller should close the connection.
 */
export class Inbound {
  #maxUnreleased;
  #maxAge;
  /** id -> { since, reply: Uint8Array | null } */
  #unreleased = new Map();

  constructor({ maxUnreleased = 128, maxAge = 300000 } = {}) {
    this.#maxUnreleased = maxUnreleased;
    this.#maxAge = maxAge;
  }

  /** How many qos-2 ids await their REL. */
  get unreleased() {
    return this.#unreleased.size;
  }

  /**
   * Classifies an incoming SEND packet:
   *   { kind: 'process' }                 new: process it, then answer()/failed()
   *   { kind: 'duplicate', rec }          qos-2 duplicate: do not process; write
   *                                       `rec` again if it is not null
   *   { kind: 'window-full', size }       too many qos-2 ids await their REL
   */
  onSend(now, send) {
    if (send.qos !== 2) return { kind: 'process' };
    const pending = this.#unreleased.get(send.id);
    if (pending) {
      const rec = pending.reply ? { cmd: Cmd.REC, id: send.id, payload: pending.reply } : null;
      return { kind: 'duplicate', rec };
    }
    if (this.#unreleased.size >= this.#maxUnreleased) {
      for (const [id, p] of this.#unreleased) if (now - p.since >= this.#maxAge) this.#unreleased.delete(id);
      if (this.#unreleased.size >= this.#maxUnreleased) return { kind: 'window-full', size: this.#unreleased.size };
    }
    this.#unreleased.set(send.id, { since: now, reply: null });
    return { kind: 'process' };
  }

  /**
   * Processing produced `reply`: returns the ACK (qos 1) or REC (qos 2) to
   * write, or null for qos 0.
   */
  answer(id, qos, reply = EMPTY) {
    if (qos === 1) return { cmd: Cmd.ACK, id, payload: reply };
    if (qos === 2) {
      const pending = this.#unreleased.get(id);
      if (pending) pending.reply = reply;
      return { cmd: Cmd.REC, id, payload: reply };
    }
    return null;
  }

  /** Processing failed: forget a qos-2 id so the sender's retransmission is processed. */
  failed(id, qos) {
    if (qos === 2) this.#unreleased.delete(id);
  }

  /** A REL arrived: forget the id and return the COM to write (also for unknown ids). */
  onRel(id) {
    this.#unreleased.delete(id);
    return { cmd: Cmd.COM, id };
  }
}

// ---------------------------------------------------------------------------
// 4. Helpers for the client: payloads, URL, device id, clock
// ---------------------------------------------------------------------------

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8');

/** The user's binary value as a private copy, or null if `data` is not binary. */
function copyBinary(data) {
  const view = asBytes(data);
  return view ? view.slice() : null;
}

/**
 * Encodes an application value as a payload: binary passes through (copied),
 * `undefined` is empty, anything else is JSON. Throws what JSON.stringify
 * throws (cycles, BigInt).
 */
export function encodeData(data) {
  if (data === undefined) return EMPTY;
  const binary = copyBinary(data);
  if (binary) return binary;
  const json = JSON.stringify(data);
  return json === undefined ? EMPTY : textEncoder.encode(json);
}

/** Decodes a payload: JSON when it parses, else the UTF-8 text ('' when empty). */
export function decodeData(bytes) {
  const text = textDecoder.decode(bytes);
  if (text === '') return '';
  try {
    return JSON.parse(text);
  } catch {
    // Not JSON: by contract the payload is then handed over as plain text.
    return text;
  }
}

/** 32 random hex characters (crypto.getRandomValues also works on plain http pages). */
function randomId() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) {
    globalThis.crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** localStorage key of the persisted device id. */
export const DEVICE_ID_KEY = 'rainbow.deviceId';

/**
 * The default device id: persisted in localStorage when there is one, else a
 * new random id. Access to localStorage can throw (privacy modes, sandboxed
 * iframes); the id then lives as long as the client.
 */
export function defaultDeviceId(storage = globalThis.localStorage) {
  if (storage) {
    try {
      let id = storage.getItem(DEVICE_ID_KEY);
      if (!id) {
        id = randomId();
        storage.setItem(DEVICE_ID_KEY, id);
      }
      return id;
    } catch {
      // Storage present but unusable: fall through to a per-instance id.
    }
  }
  return randomId();
}

function defaultOs() {
  if (typeof document !== 'undefined' && typeof navigator !== 'undefined') return 'web';
  if (typeof process !== 'undefined' && process.versions?.node) return 'node';
  return 'js';
}

/**
 * Builds the connect URL: adds a scheme (ws://, or ws(s) for http(s)), the
 * path `/connect/` when there is none, then the user's params and the
 * `X-DEVICEID` / `X-CLIENT-OS` query parameters. In a browser `url` may be
 * relative ("/connect/") or omitted (same host).
 */
export function buildConnectUrl(url, { deviceId, os, params } = {}) {
  const location = globalThis.location;
  let raw = url == null || url === '' ? '/' : String(url);
  let parsed;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    parsed = new URL(raw);
  } else if (raw.startsWith('/') && location?.host) {
    parsed = new URL(raw, location.href);
  } else if (raw.startsWith('/')) {
    throw new TypeError(`relative Rainbow URL ${raw} needs a page location (pass ws://host:port)`);
  } else {
    parsed = new URL(`ws://${raw}`);
  }
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TypeError(`unsupported URL scheme ${parsed.protocol} (use ws:// or wss://)`);
  }
  if (parsed.pathname === '' || parsed.pathname === '/') parsed.pathname = '/connect/';
  for (const [key, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== null) parsed.searchParams.set(key, String(value));
  }
  parsed.searchParams.set('X-DEVICEID', deviceId);
  parsed.searchParams.set('X-CLIENT-OS', os);
  parsed.hash = '';
  return parsed.toString();
}

/** The real clock and timers; tests inject a fake with the same shape. */
const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

/** setTimeout overflows past 2^31-1 ms and would fire at once. */
const MAX_TIMER_DELAY = 0x7fffffff;

const EVENTS = ['open', 'message', 'close', 'error', 'reconnecting'];

/** WebSocket readyState OPEN (also on implementations without the static). */
const WS_OPEN = 1;

// ---------------------------------------------------------------------------
// 5. Rainbow: the client
// ---------------------------------------------------------------------------

/**
 * A Rainbow connection with request/response sends, automatic replies to
 * server messages, reconnect with backoff and a bounded send queue.
 *
 *   const rb = new Rainbow('ws://localhost:1984')
 *     .on('open', () => console.log('open'))
 *     .on('message', (type, data) => ({ ok: true }))   // the reply to the server
 *     .open();
 *   const reply = await rb.send(1, { id: 100 }, { qos: 1 });
 *
 * States: 'idle' (not opened yet), 'connecting', 'open', 'reconnecting'
 * (waiting for the next attempt), 'closed' (close() was called).
 */
export class Rainbow {
  #url;
  #deviceId;
  #WebSocket;
  #clock;
  #random;
  #reconnect;
  #maxPending;
  #timeout;
  #retransmitInterval;

  #state = 'idle';
  #listeners = new Map(EVENTS.map((name) => [name, []]));
  /** The current connection: { ws, open, outbound, inbound }, or null. */
  #conn = null;
  /** Reconnect attempts since the last successful open. */
  #attempt = 0;
  #reconnectTimer = null;
  #tickTimer = null;
  /**
   * Every unsettled send, in send order (Map keeps insertion order):
   * seq -> { seq, type, qos, payload, binary, deadline, resolve, reject,
   *          inFlight (held by the current Outbound), written (on some connection) }
   */
  #pending = new Map();
  #seq = 0;
  /** True while 'open' listeners run: their sends are written before the queue. */
  #inOpen = false;

  /**
   * @param {string} [url] ws://host:port, a full .../connect/ URL, or (browser) a path
   * @param {object} [options] see rainbow.d.ts (RainbowOptions)
   */
  constructor(url, options = {}) {
    const {
      deviceId = defaultDeviceId(),
      os = defaultOs(),
      params,
      WebSocket = globalThis.WebSocket,
      reconnect = {},
      maxPending = 1000,
      timeout = 10000,
      retransmitInterval = 3000,
      clock = systemClock,
      random = Math.random,
    } = options;
    if (typeof WebSocket !== 'function') {
      throw new TypeError('no WebSocket implementation: pass options.WebSocket (e.g. from the "ws" package)');
    }
    if (!(Number.isInteger(maxPending) && maxPending >= 1)) throw new RangeError('maxPending must be an integer >= 1');
    if (!(timeout > 0)) throw new RangeError('timeout must be > 0 ms');
    this.#deviceId = String(deviceId);
    this.#url = buildConnectUrl(url, { deviceId: this.#deviceId, os: String(os), params });
    this.#WebSocket = WebSocket;
    this.#clock = clock;
    this.#random = random;
    this.#reconnect =
      reconnect === false ? null : { min: 500, max: 30000, factor: 2, jitter: 0.5, ...reconnect };
    this.#maxPending = maxPending;
    this.#timeout = timeout;
    this.#retransmitInterval = retransmitInterval;
  }

  /** The full connect URL, query parameters included. */
  get url() {
    return this.#url;
  }

  /** The device id sent as X-DEVICEID. */
  get deviceId() {
    return this.#deviceId;
  }

  /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() {
    return this.#state;
  }

  /** How many sends are unsettled (queued or awaiting their reply). */
  get pending() {
    return this.#pending.size;
  }

  // -- events ---------------------------------------------------------------

  /** Adds a listener; returns this for chaining. */
  on(event, fn) {
    const list = this.#listenersOf(event);
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    list.push(fn);
    return this;
  }

  /** Removes a listener added with on(); returns this. */
  off(event, fn) {
    const list = this.#listenersOf(event);
    const at = list.indexOf(fn);
    if (at >= 0) list.splice(at, 1);
    return this;
  }

  #listenersOf(event) {
    const list = this.#listeners.get(event);
    if (!list) throw new TypeError(`unknown event "${event}" (expected one of ${EVENTS.join(', ')})`);
    return list;
  }

  /** Calls every listener of `event`. A listener that throws is reported as 'error'. */
  #emit(event, ...args) {
    const results = [];
    for (const fn of [...this.#listeners.get(event)]) {
      try {
        results.push(fn.apply(this, args));
      } catch (err) {
        if (event === 'error') this.#reportUnhandled(err);
        else this.#emitError(err);
      }
    }
    return results;
  }

  /** Reports an error to 'error' listeners, or to the console when there are none. */
  #emitError(err) {
    if (this.#listeners.get('error').length === 0) this.#reportUnhandled(err);
    else this.#emit('error', err);
  }

  #reportUnhandled(err) {
    // No 'error' listener (or it threw): never drop an error silently.
    console.error('[rainbow]', err);
  }

  // -- lifecycle ------------------------------------------------------------

  /** Connects (no-op when already connecting or open); returns this. */
  open() {
    if (this.#state === 'idle' || this.#state === 'closed') {
      this.#attempt = 0;
      this.#connect();
    }
    return this;
  }

  /**
   * Closes the connection, stops reconnecting and rejects every pending send
   * with code CLOSED. open() may be called again later.
   */
  close(code = 1000, reason = '') {
    if (this.#state === 'closed') return;
    const wasActive = this.#state !== 'idle';
    this.#state = 'closed';
    if (this.#reconnectTimer !== null) {
      this.#clock.clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
    }
    const conn = this.#conn;
    if (conn) {
      this.#detach(conn);
      this.#closeSocket(conn.ws, code, reason);
    }
    this.#rejectAll(new RainbowError('CLOSED', 'the Rainbow client was closed'));
    if (wasActive) this.#emit('close', null, { code, reason, wasClean: true, reconnecting: false });
  }

  #connect() {
    this.#state = 'connecting';
    let ws;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (err) {
      this.#emitError(err);
      this.#afterDisconnect(null, { code: 1006, reason: String(err?.message ?? err), wasClean: false });
      return;
    }
    ws.binaryType = 'arraybuffer';
    const conn = {
      ws,
      open: false,
      outbound: new Outbound({
        retransmitInterval: this.#retransmitInterval,
        maxInFlight: Math.min(this.#maxPending, MAX_MESSAGE_ID),
      }),
      inbound: new Inbound(),
    };
    this.#conn = conn;
    ws.onopen = () => this.#onOpen(conn);
    ws.onmessage = (event) => this.#onMessage(conn, event.data);
    ws.onerror = (event) => this.#onSocketError(conn, event);
    ws.onclose = (event) => this.#onClose(conn, event);
  }

  /**
   * A connection is established. 'open' listeners run before anything is
   * written, and what they send goes out first: a new connection has a new
   * identity and no server-side state (context, channels), and 'open' is
   * where the app restores it. The sends queued while disconnected, and the
   * unanswered ones, follow in their order. Writing them first would let the
   * backend see them on a connection it knows nothing about yet (in the chat
   * demo: a message sent while offline reached the backend before the name,
   * was refused with "set your name first", and was lost).
   */
  #onOpen(conn) {
    if (this.#conn !== conn) return;
    conn.open = true;
    this.#state = 'open';
    this.#attempt = 0;
    const firstNew = this.#seq + 1;
    this.#inOpen = true;
    try {
      this.#emit('open');
    } finally {
      this.#inOpen = false;
    }
    if (this.#conn !== conn || !conn.open) return; // a listener called close()
    const older = [];
    const fresh = [];
    for (const item of this.#pending) (item[0] >= firstNew ? fresh : older).push(item);
    if (fresh.length > 0 && older.length > 0) this.#pending = new Map([...fresh, ...older]);
    this.#pump();
    this.#schedule();
  }

  #onSocketError(conn, event) {
    if (this.#conn !== conn) return;
    const err =
      event?.error instanceof Error
        ? event.error
        : new RainbowError('SOCKET', event?.message || `WebSocket error (${this.#url})`);
    this.#emitError(err);
  }

  #onClose(conn, event) {
    if (this.#conn !== conn) return;
    this.#afterDisconnect(conn, { code: event?.code ?? 1006, reason: event?.reason ?? '', wasClean: !!event?.wasClean });
  }

  /**
   * Closes a socket. Browsers only let a client send close codes 1000 and
   * 3000-4999 (others throw), so a protocol-error code falls back to a plain
   * close there; the `ws` package sends it as given.
   */
  #closeSocket(ws, code, reason) {
    const text = String(reason ?? '').slice(0, 100); // the close reason is limited to 123 bytes
    try {
      ws.close(code, text);
      return;
    } catch {
      // Code refused by this WebSocket implementation: retry with the default.
    }
    try {
      ws.close();
    } catch (err) {
      this.#emitError(err);
    }
  }

  /** Stops listening to a connection's socket and forgets it. */
  #detach(conn) {
    conn.open = false;
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onclose = null;
    // An abandoned socket may still report an error while it closes; the `ws`
    // package throws on an 'error' nobody listens to, so keep a listener.
    // Such late errors are about a connection we already gave up on.
    conn.ws.onerror = () => {};
    // Unanswered SENDs go back to the queue; ids belong to this connection.
    for (const entry of conn.outbound.drain()) entry.inFlight = false;
    if (this.#conn === conn) this.#conn = null;
  }

  /**
   * The connection (or an attempt) ended without close(): report it and
   * either schedule the next attempt or, without reconnect, give up.
   */
  #afterDisconnect(conn, info) {
    const wasOpen = !!conn?.open;
    if (conn) this.#detach(conn);
    const reconnecting = this.#reconnect !== null;
    const err = new RainbowError(
      'DISCONNECTED',
      wasOpen
        ? `connection closed (code ${info.code}${info.reason ? `: ${info.reason}` : ''})`
        : `could not connect to ${this.#url} (code ${info.code})`,
      { closeCode: info.code, reason: info.reason },
    );
    if (!reconnecting) {
      this.#state = 'closed';
      this.#rejectAll(new RainbowError('CLOSED', 'the connection closed and reconnect is disabled', { cause: err }));
      this.#emit('close', err, { ...info, reconnecting: false });
      return;
    }
    this.#state = 'reconnecting';
    this.#emit('close', err, { ...info, reconnecting: true });
    if (this.#state !== 'reconnecting') return; // a 'close' listener called close()
    this.#attempt += 1;
    const { min, max, factor, jitter } = this.#reconnect;
    const base = Math.min(max, min * factor ** (this.#attempt - 1));
    const delay = Math.max(0, Math.round(base * (1 - jitter * this.#random())));
    this.#reconnectTimer = this.#clock.setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#state === 'reconnecting') this.#connect();
    }, delay);
    this.#schedule(); // queued sends still expire while we wait
    this.#emit('reconnecting', { attempt: this.#attempt, delay });
  }

  /** A protocol violation by the server: report it and drop the connection. */
  #protocolError(conn, err, closeCode = 1002) {
    this.#emitError(err);
    if (this.#conn !== conn) return;
    this.#closeSocket(conn.ws, closeCode, err.message);
    this.#afterDisconnect(conn, { code: closeCode, reason: err.message, wasClean: false });
  }

  // -- writing --------------------------------------------------------------

  /** Writes one packet; a failing socket is treated as a lost connection. */
  #write(conn, packet) {
    if (!conn.open || conn.ws.readyState !== WS_OPEN) return false;
    try {
      conn.ws.send(encodePacket(packet));
      return true;
    } catch (err) {
      this.#emitError(err);
      if (this.#conn === conn) this.#afterDisconnect(conn, { code: 1006, reason: 'send failed', wasClean: false });
      return false;
    }
  }

  /** Writes queued sends, in order, while the connection has capacity. */
  #pump() {
    const conn = this.#conn;
    if (!conn?.open || this.#inOpen) return; // #onOpen pumps once its listeners ran
    const now = this.#clock.now();
    for (const entry of this.#pending.values()) {
      if (entry.inFlight) continue;
      if (entry.qos === 0) {
        const packet = { cmd: Cmd.SEND, type: entry.type, qos: 0, id: 0, dup: false, payload: entry.payload };
        if (!this.#write(conn, packet)) return;
        this.#settle(entry, null, undefined); // qos 0: done once written
        continue;
      }
      if (!conn.outbound.hasCapacity()) return;
      const packet = conn.outbound.send(now, {
        type: entry.type,
        qos: entry.qos,
        payload: entry.payload,
        deadline: entry.deadline,
        tag: entry,
        dup: entry.written, // written on an earlier connection: a retransmission
      });
      entry.inFlight = true;
      entry.written = true;
      if (!this.#write(conn, packet)) return;
    }
  }

  #settle(entry, err, value) {
    if (!this.#pending.delete(entry.seq)) return;
    if (err) entry.reject(err);
    else entry.resolve(value);
  }

  #rejectAll(err) {
    const entries = [...this.#pending.values()];
    this.#pending.clear();
    for (const entry of entries) entry.reject(err);
    this.#schedule();
  }

  // -- timers ---------------------------------------------------------------

  /** (Re)arms the single timer for the earliest retransmit or deadline. */
  #schedule() {
    if (this.#tickTimer !== null) {
      this.#clock.clearTimeout(this.#tickTimer);
      this.#tickTimer = null;
    }
    let next = this.#conn?.outbound.nextDeadline() ?? Infinity;
    for (const entry of this.#pending.values()) {
      if (!entry.inFlight && entry.deadline < next) next = entry.deadline;
    }
    if (next === Infinity) return;
    const delay = Math.min(MAX_TIMER_DELAY, Math.max(0, next - this.#clock.now()));
    this.#tickTimer = this.#clock.setTimeout(() => {
      this.#tickTimer = null;
      this.#tick();
    }, delay);
  }

  #tick() {
    const now = this.#clock.now();
    const conn = this.#conn;
    if (conn) {
      for (const action of conn.outbound.onTimeout(now)) {
        if (action.kind === 'retransmit') {
          if (conn.open) this.#write(conn, action.packet);
        } else {
          this.#timeoutEntry(action.tag);
        }
      }
    }
    for (const entry of this.#pending.values()) {
      if (!entry.inFlight && entry.deadline <= now) this.#timeoutEntry(entry);
    }
    this.#pump();
    this.#schedule();
  }

  #timeoutEntry(entry) {
    const ms = entry.deadline - entry.start;
    this.#settle(entry, new RainbowError('TIMEOUT', `message type ${entry.type} got no answer within ${ms} ms`));
  }

  // -- sending --------------------------------------------------------------

  /**
   * Sends a message and resolves with the reply.
   *
   * - qos 0 resolves with undefined once written.
   * - qos 1/2 resolve with the ACK/REC payload: JSON-decoded when it parses,
   *   else a string; a Uint8Array when `data` was binary.
   * - Rejects with code QUEUE_FULL, TIMEOUT or CLOSED (see RainbowError).
   *
   * @param {number} type message type, 0..65535
   * @param {*} data JSON-encodable value, or Uint8Array/ArrayBuffer (binary)
   * @param {{ qos?: 0|1|2, timeout?: number }} [options]
   */
  send(type, data, { qos = 1, timeout = this.#timeout } = {}) {
    if (!isU16(type)) return Promise.reject(new RangeError(`message type must be an integer 0..65535, got ${type}`));
    if (qos !== 0 && qos !== 1 && qos !== 2) return Promise.reject(new RangeError(`qos must be 0, 1 or 2, got ${qos}`));
    if (!(timeout > 0)) return Promise.reject(new RangeError(`timeout must be > 0 ms, got ${timeout}`));
    if (this.#state === 'closed') {
      return Promise.reject(new RainbowError('CLOSED', 'the Rainbow client is closed (call open() first)'));
    }
    if (this.#pending.size >= this.#maxPending) {
      return Promise.reject(
        new RainbowError('QUEUE_FULL', `send queue full: ${this.#pending.size} messages pending (maxPending)`),
      );
    }
    let payload;
    try {
      payload = encodeData(data);
    } catch (err) {
      return Promise.reject(err);
    }
    const binary = asBytes(data) !== null;
    const now = this.#clock.now();
    return new Promise((resolve, reject) => {
      const entry = {
        seq: ++this.#seq,
        type,
        qos,
        payload,
        binary,
        start: now,
        deadline: now + timeout,
        resolve,
        reject,
        inFlight: false,
        written: false,
      };
      this.#pending.set(entry.seq, entry);
      this.#pump();
      this.#schedule();
    });
  }

  // -- receiving ------------------------------------------------------------

  #onMessage(conn, data) {
    if (this.#conn !== conn || !conn.open) return;
    if (typeof data === 'string') {
      this.#protocolError(conn, new DecodeError('not_bytes', 'got a text frame; v1 packets are binary'), 1003);
      return;
    }
    const result = decodePacket(data);
    if (!result.ok) {
      this.#protocolError(conn, result.error);
      return;
    }
    const packet = result.packet;
    const now = this.#clock.now();
    switch (packet.cmd) {
      case Cmd.SEND:
        this.#onSend(conn, now, packet);
        break;
      case Cmd.ACK:
        this.#answered(conn.outbound.onAck(packet.id, packet.payload));
        break;
      case Cmd.REC: {
        const { answered, rel } = conn.outbound.onRec(now, packet.id, packet.payload);
        this.#write(conn, rel);
        this.#answered(answered);
        break;
      }
      case Cmd.REL:
        this.#write(conn, conn.inbound.onRel(packet.id));
        break;
      case Cmd.COM:
        conn.outbound.onCom(packet.id);
        this.#pump(); // an id was freed
        break;
    }
    this.#schedule();
  }

  /** An ACK/REC resolved one of our sends. */
  #answered(answered) {
    if (!answered) return; // late or duplicate answer: harmless
    const entry = answered.tag;
    const value = entry.binary ? answered.payload.slice() : decodeData(answered.payload);
    this.#settle(entry, null, value);
    this.#pump();
  }

  #onSend(conn, now, send) {
    const disposition = conn.inbound.onSend(now, send);
    if (disposition.kind === 'duplicate') {
      if (disposition.rec) this.#write(conn, disposition.rec);
      return;
    }
    if (disposition.kind === 'window-full') {
      const err = new RainbowError('PROTOCOL', `${disposition.size} qos-2 messages await their REL`);
      this.#protocolError(conn, err, 1008);
      return;
    }
    this.#deliver(conn, send).catch((err) => this.#emitError(err));
  }

  /**
   * Hands a server message to the 'message' listeners, then answers it
   * (qos 1/2) with the first listener result that is not undefined, awaited.
   * A listener that throws leaves the message unanswered (the server
   * retransmits it) and is reported as 'error'.
   */
  async #deliver(conn, send) {
    const raw = send.payload.slice();
    const meta = { qos: send.qos, dup: send.dup, raw };
    const data = decodeData(raw);
    let payload;
    try {
      const results = [];
      for (const fn of [...this.#listeners.get('message')]) results.push(fn.call(this, send.type, data, meta));
      const settled = await Promise.all(results);
      payload = encodeData(settled.find((value) => value !== undefined));
    } catch (cause) {
      conn.inbound.failed(send.id, send.qos);
      const err = new RainbowError('HANDLER', `message handler for type ${send.type} failed: ${cause?.message ?? cause}`, {
        cause,
      });
      this.#emitError(err);
      return;
    }
    if (send.qos === 0 || this.#conn !== conn || !conn.open) return; // ids were per connection
    const answer = conn.inbound.answer(send.id, send.qos, payload);
    if (answer) this.#write(conn, answer);
  }
}

export default Rainbow;
