#!/usr/bin/env node
// A stand-in for the gateway plus the seed's chat backend, to develop and
// check the demo page without the Rust gateway:
//
//   npm install && node demo/dev-server.js [port]     (default 8080, 127.0.0.1)
//   open http://127.0.0.1:8080/
//
// Serves /rainbow.js and the demo at /, speaks v1 packets on /connect/ (using
// the client's own codec and QoS machines), and implements message types
// 0 (set name, join) and 1 (say), broadcasting 1001/1002/1003/1004 at qos 1.
// GET /__kick cuts every connection, to see the page reconnect.
// It is a development tool, not part of the package.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';
import { Cmd, Inbound, Outbound, decodeData, decodePacket, encodeData, encodePacket } from '../rainbow.js';

const port = Number(process.argv[2] ?? process.env.PORT ?? 8080);
const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/rainbow.js': ['../rainbow.js', 'text/javascript; charset=utf-8'],
};

const clients = new Set(); // { ws, identity, name, outbound, inbound }

const http = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (path === '/__kick') {
    for (const client of clients) client.ws.terminate();
    res.end('kicked\n');
    return;
  }
  const file = files[path];
  if (!file) {
    res.writeHead(404).end('not found\n');
    return;
  }
  try {
    const body = await readFile(new URL(file[0], import.meta.url));
    res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' }).end(body);
  } catch (err) {
    res.writeHead(500).end(`${err.message}\n`);
  }
});

const wss = new WebSocketServer({ noServer: true });
http.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/connect/' || !url.searchParams.get('X-DEVICEID') || !url.searchParams.get('X-CLIENT-OS')) {
    socket.end('HTTP/1.1 401 Unauthorized\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => accept(ws));
});

function write(client, packet) {
  if (client.ws.readyState === 1) client.ws.send(encodePacket(packet));
}

function broadcast(type, data) {
  const payload = encodeData(data);
  for (const client of clients) {
    if (client.name === null || !client.outbound.hasCapacity()) continue;
    write(client, client.outbound.send(Date.now(), { type, qos: 1, payload, deadline: Date.now() + 10000, tag: null }));
  }
}

const online = () => [...clients].filter((c) => c.name !== null).length;

/** The chat backend: returns the reply to a client's SEND. */
function handle(client, type, data) {
  if (type === 0) {
    const first = client.name === null;
    client.name = String(data?.message ?? 'anonymous').slice(0, 40);
    broadcast(1001, { name: client.name, identity: client.identity });
    if (first) broadcast(1003, { online: online() });
    return { status: 'ok', identity: client.identity };
  }
  if (type === 1 && client.name !== null) {
    broadcast(1002, { name: client.name, message: String(data?.message ?? ''), identity: client.identity });
    return { status: 'ok' };
  }
  return { status: 'error', msg: 'join first' };
}

function accept(ws) {
  const client = { ws, identity: randomBytes(32).toString('hex'), name: null, outbound: new Outbound(), inbound: new Inbound() };
  clients.add(client);
  const timer = setInterval(() => {
    for (const action of client.outbound.onTimeout(Date.now())) if (action.kind === 'retransmit') write(client, action.packet);
  }, 1000);
  ws.on('message', (bytes, isBinary) => {
    const result = isBinary ? decodePacket(new Uint8Array(bytes)) : { ok: false, error: new Error('text frame') };
    if (!result.ok) {
      ws.close(1002, result.error.message);
      return;
    }
    const p = result.packet;
    if (p.cmd === Cmd.SEND) {
      const disposition = client.inbound.onSend(Date.now(), p);
      if (disposition.kind === 'duplicate') {
        if (disposition.rec) write(client, disposition.rec);
      } else if (disposition.kind === 'process') {
        const answer = client.inbound.answer(p.id, p.qos, encodeData(handle(client, p.type, decodeData(p.payload))));
        if (answer) write(client, answer);
      }
    } else if (p.cmd === Cmd.ACK) {
      client.outbound.onAck(p.id, p.payload);
    } else if (p.cmd === Cmd.REC) {
      write(client, client.outbound.onRec(Date.now(), p.id, p.payload).rel);
    } else if (p.cmd === Cmd.REL) {
      write(client, client.inbound.onRel(p.id));
    } else if (p.cmd === Cmd.COM) {
      client.outbound.onCom(p.id);
    }
  });
  ws.on('close', () => {
    clearInterval(timer);
    clients.delete(client);
    if (client.name !== null) {
      broadcast(1004, { name: client.name, identity: client.identity });
      broadcast(1003, { online: online() });
    }
  });
}

http.listen(port, '127.0.0.1', () => console.log(`Rainbow chat demo on http://127.0.0.1:${port}/`));
