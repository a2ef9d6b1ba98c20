// Type declarations for rainbow.js, the JavaScript client of the Rainbow gateway.

/** Quality of service: 0 at most once, 1 at least once, 2 exactly once. */
export type Qos = 0 | 1 | 2;

/** Binary values accepted as payloads; they are sent as-is. */
export type BinaryData = Uint8Array | ArrayBuffer | ArrayBufferView;

export type RainbowState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Error codes carried by RainbowError#code. */
export type RainbowErrorCode =
  | 'QUEUE_FULL'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'PROTOCOL'
  | 'SOCKET'
  | 'DISCONNECTED'
  | 'HANDLER'
  | 'IN_FLIGHT_FULL';

/** An Error with a stable `code` (see RainbowErrorCode). */
export class RainbowError extends Error {
  constructor(code: string, message: string, extra?: Record<string, unknown>);
  readonly code: RainbowErrorCode | string;
  /** DISCONNECTED only: the WebSocket close code and reason. */
  readonly closeCode?: number;
  readonly reason?: string;
}

export type DecodeErrorKind =
  | 'empty'
  | 'not_bytes'
  | 'unknown_command'
  | 'invalid_qos'
  | 'truncated'
  | 'zero_message_id'
  | 'trailing_bytes';

/** Why some bytes are not a v1 packet (code 'PROTOCOL'). */
export class DecodeError extends RainbowError {
  constructor(kind: DecodeErrorKind, message: string);
  readonly kind: DecodeErrorKind;
}

/**
 * Minimal shape of a WHATWG WebSocket, as implemented by browsers and the `ws`
 * package. The event handler properties are loosely typed so that both fit.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: any;
  onmessage: any;
  onerror: any;
  onclose: any;
}

/** A WebSocket class: `globalThis.WebSocket` in browsers, `WebSocket` from the `ws` package in Node. */
export type WebSocketConstructor = new (url: string, ...rest: any[]) => WebSocketLike;

/** The clock and timers the client uses; inject a fake one in tests. Times are in ms. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface ReconnectOptions {
  /** First delay in ms (default 500). */
  min?: number;
  /** Largest delay in ms (default 30000). */
  max?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** 0..1: each delay is reduced by up to this fraction at random (default 0.5). */
  jitter?: number;
}

export interface RainbowOptions {
  /** X-DEVICEID; defaults to a random id persisted in localStorage ('rainbow.deviceId'). */
  deviceId?: string;
  /** X-CLIENT-OS; defaults to 'web' in browsers, 'node' in Node. */
  os?: string;
  /** Extra query parameters for the connect hook. */
  params?: Record<string, string | number | boolean | null | undefined>;
  /** WebSocket implementation; defaults to globalThis.WebSocket (pass `ws` in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Backoff between reconnect attempts, or false to never reconnect. */
  reconnect?: ReconnectOptions | boolean;
  /** Most sends that may be pending (queued or awaiting a reply) at once (default 1000). */
  maxPending?: number;
  /** Default send timeout in ms (default 10000). */
  timeout?: number;
  /** Retransmit interval for unanswered sends, in ms (default 3000). */
  retransmitInterval?: number;
  /** Clock and timers (advanced: for tests). */
  clock?: Clock;
  /** Random source in [0, 1) for the reconnect jitter (advanced: for tests). */
  random?: () => number;
}

export interface SendOptions {
  /** Default 1. */
  qos?: Qos;
  /** ms until the promise rejects with TIMEOUT, queueing and retransmits included (default: the client's timeout). */
  timeout?: number;
}

export interface MessageMeta {
  qos: Qos;
  /** The server marked this SEND as a retransmission. */
  dup: boolean;
  /** The payload bytes as received. */
  raw: Uint8Array;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether the client will try to connect again. */
  reconnecting: boolean;
}

export interface ReconnectingInfo {
  /** 1 for the first retry after a connection was lost. */
  attempt: number;
  /** ms until that attempt. */
  delay: number;
}

/**
 * A message handler. For qos 1/2 messages its return value (awaited if it is
 * a Promise) is the reply payload: JSON-encoded, binary as-is, undefined as
 * empty. Throwing leaves the message unanswered (the server retransmits it).
 */
export type MessageHandler = (this: Rainbow, msgType: number, data: any, meta: MessageMeta) => unknown;

export interface RainbowEvents {
  /**
   * A connection is established; nothing has been written on it yet. Sends
   * made here (synchronously) are written first, before the sends queued
   * while disconnected and the unanswered ones: restore per-connection state
   * (context, channels) here.
   */
  open: (this: Rainbow) => void;
  message: MessageHandler;
  /** `error` is null after close(), a RainbowError (code DISCONNECTED) otherwise. */
  close: (this: Rainbow, error: RainbowError | null, info: CloseInfo) => void;
  error: (this: Rainbow, error: Error) => void;
  reconnecting: (this: Rainbow, info: ReconnectingInfo) => void;
}

export class Rainbow {
  /**
   * @param url ws://host:port (the path /connect/ is added), a full .../connect/ URL,
   *            http(s):// (mapped to ws(s)://), host:port, or in a browser a path
   *            such as '/connect/' or nothing (same host).
   */
  constructor(url?: string, options?: RainbowOptions);

  /** The full connect URL, query parameters included. */
  readonly url: string;
  readonly deviceId: string;
  readonly state: RainbowState;
  /** Sends queued or awaiting their reply. */
  readonly pending: number;

  on<E extends keyof RainbowEvents>(event: E, listener: RainbowEvents[E]): this;
  off<E extends keyof RainbowEvents>(event: E, listener: RainbowEvents[E]): this;

  /** Connects (no-op if already connecting or open). */
  open(): this;
  /** Closes, stops reconnecting and rejects pending sends with CLOSED. open() may be called again. */
  close(code?: number, reason?: string): void;

  /**
   * Sends a message. qos 0 resolves with undefined once written; qos 1/2 resolve
   * with the reply (JSON-decoded when it parses, else a string). Rejects with a
   * RainbowError: QUEUE_FULL, TIMEOUT or CLOSED.
   */
  send(msgType: number, data: BinaryData, options?: SendOptions): Promise<Uint8Array | undefined>;
  send<R = any>(msgType: number, data?: unknown, options?: SendOptions): Promise<R>;
}

export default Rainbow;

// -- Codec and QoS internals (exported for tests and other drivers) ----------

export const Cmd: Readonly<{ SEND: 1; ACK: 2; REC: 3; REL: 4; COM: 5 }>;
export const MAX_MESSAGE_ID: 65534;
export const DEVICE_ID_KEY: 'rainbow.deviceId';

export interface SendPacket {
  cmd: 1;
  type: number;
  qos: Qos;
  /** 0 for qos 0. */
  id: number;
  dup: boolean;
  payload: Uint8Array;
}
export interface ReplyPacket {
  cmd: 2 | 3;
  id: number;
  payload: Uint8Array;
}
export interface IdPacket {
  cmd: 4 | 5;
  id: number;
}
export type Packet = SendPacket | ReplyPacket | IdPacket;

export type DecodeResult = { ok: true; packet: Packet } | { ok: false; error: DecodeError };

/** Throws TypeError/RangeError for a malformed packet object. */
export function encodePacket(packet: Packet): Uint8Array;
/** Never throws. */
export function decodePacket(input: unknown): DecodeResult;

/** JSON-encodes a value; binary passes through (copied); undefined is empty. */
export function encodeData(data: unknown): Uint8Array;
/** JSON when it parses, else the UTF-8 text ('' when empty). */
export function decodeData(bytes: Uint8Array): any;

export function buildConnectUrl(
  url: string | undefined,
  options: { deviceId: string; os: string; params?: RainbowOptions['params'] },
): string;
export function defaultDeviceId(storage?: Pick<Storage, 'getItem' | 'setItem'> | null): string;

export interface OutboundOptions {
  retransmitInterval?: number;
  maxInFlight?: number;
  releaseLifetime?: number;
}
export type OutboundAction<T> = { kind: 'retransmit'; packet: SendPacket | IdPacket } | { kind: 'expired'; tag: T };

/** Sender-side QoS state for one connection (sans-IO; times in ms). */
export class Outbound<T = unknown> {
  constructor(options?: OutboundOptions);
  readonly inFlight: number;
  hasCapacity(): boolean;
  send(
    now: number,
    send: { type: number; qos: Qos; payload?: Uint8Array; deadline: number; tag: T; dup?: boolean },
  ): SendPacket;
  onAck(id: number, payload?: Uint8Array): { tag: T; payload: Uint8Array } | null;
  onRec(now: number, id: number, payload?: Uint8Array): { answered: { tag: T; payload: Uint8Array } | null; rel: IdPacket };
  onCom(id: number): void;
  nextDeadline(): number | null;
  onTimeout(now: number): OutboundAction<T>[];
  drain(): T[];
}

export interface InboundOptions {
  maxUnreleased?: number;
  maxAge?: number;
}
export type Disposition =
  | { kind: 'process' }
  | { kind: 'duplicate'; rec: ReplyPacket | null }
  | { kind: 'window-full'; size: number };

/** Receiver-side QoS state for one connection: the qos-2 dedup window. */
export class Inbound {
  constructor(options?: InboundOptions);
  readonly unreleased: number;
  onSend(now: number, send: SendPacket): Disposition;
  answer(id: number, qos: Qos, reply?: Uint8Array): ReplyPacket | null;
  failed(id: number, qos: Qos): void;
  onRel(id: number): IdPacket;
}
