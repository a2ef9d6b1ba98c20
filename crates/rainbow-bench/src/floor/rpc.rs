//! The rpc floor: a Rainbow client's SENDs relayed to an HTTP backend with
//! the fewest steps a gateway could take.
//!
//! One task per client owns both of its sockets: the client's WebSocket and
//! its own keep-alive connection to the backend (no pool, no task between
//! them). Per message: read the frame, write one `POST` with the payload,
//! read the answer, write the ACK (qos 1) or REC (qos 2). Messages of one
//! client are relayed one at a time, in order. No signature, identity or
//! cookie header, no retransmission or duplicate check, no limit: it is the
//! part of a gateway's work that any gateway must do.

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use bytes::Bytes;
use rainbow_protocol::websocket::{self, Decoded, Message, OpCode};
use rainbow_protocol::{Packet, Qos, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Counts, MAX_REQUEST, read_message};
use crate::http::HttpUrl;

/// Relays one handshaken client until it closes. `pending` holds bytes
/// the client sent after its handshake.
pub(super) async fn relay(
    mut client: TcpStream,
    mut pending: Vec<u8>,
    forward: &HttpUrl,
    counts: &Counts,
) -> anyhow::Result<()> {
    let mut backend = TcpStream::connect(forward.addr()).await.context("cannot connect to the backend")?;
    backend.set_nodelay(true)?;
    let request_head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n",
        forward.path(),
        forward.host()
    );
    let mut decoder = websocket::Decoder::new(MAX_REQUEST);
    let mut answer = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut taken = 0;
        while let Decoded::Frame { consumed, message } = decoder.decode(&mut pending[taken..])? {
            taken += consumed;
            let packet = match message {
                Some(Message::Data { payload, .. }) => Packet::decode(payload).context("malformed packet")?,
                Some(Message::Ping(payload)) => {
                    websocket::encode(OpCode::Pong, &payload, &mut out);
                    continue;
                }
                Some(Message::Close(_)) => return Ok(()),
                Some(Message::Pong(_)) | None => continue,
            };
            let reply = match packet {
                Packet::Send(send) => {
                    let reply = call(&mut backend, &request_head, &send.payload, &mut answer).await?;
                    counts.round_trips.fetch_add(1, Ordering::Relaxed);
                    match send.qos {
                        Qos::AtMostOnce => None,
                        Qos::AtLeastOnce => Some(Packet::Ack(Reply { id: send.id, payload: reply })),
                        Qos::ExactlyOnce => Some(Packet::Rec(Reply { id: send.id, payload: reply })),
                    }
                }
                Packet::Rel(id) => Some(Packet::Com(id)),
                Packet::Ack(_) | Packet::Rec(_) | Packet::Com(_) => None,
            };
            if let Some(reply) = reply {
                websocket::encode(OpCode::Binary, &reply.encode(), &mut out);
            }
        }
        pending.drain(..taken);
        if !out.is_empty() {
            client.write_all(&out).await?;
            out.clear();
        }
        if client.read_buf(&mut pending).await? == 0 {
            return Ok(());
        }
    }
}

/// One `POST` on the client's backend connection; the answer's body.
async fn call(backend: &mut TcpStream, head: &str, body: &[u8], answer: &mut Vec<u8>) -> anyhow::Result<Bytes> {
    let mut request = Vec::with_capacity(head.len() + 32 + body.len());
    request.extend_from_slice(head.as_bytes());
    write!(request, "Content-Length: {}\r\n\r\n", body.len())?;
    request.extend_from_slice(body);
    backend.write_all(&request).await.context("writing to the backend")?;
    answer.clear();
    let Some(response) = read_message(backend, answer).await? else { bail!("the backend closed the connection") };
    let Some(length) = response.content_length else { bail!("the backend's answer has no Content-Length") };
    if !response.target.starts_with('2') {
        bail!("the backend answered HTTP {}", response.target);
    }
    Ok(Bytes::copy_from_slice(&answer[response.len..response.len + length]))
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use rainbow_protocol::{Packet, Qos, Reply, SendPacket};
    use tokio_tungstenite::tungstenite::Message;

    use crate::backend::Backend;
    use crate::floor::Floor;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_are_relayed_to_the_backend_and_answered_with_its_reply() {
        let backend = Backend::bind("127.0.0.1:0".parse().unwrap(), bytes::Bytes::from_static(b"pong")).await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let backend_counts = backend.counts();
        tokio::spawn(backend.serve(std::future::pending()));
        let forward = format!("http://{backend_addr}/message/1/");
        let floor = Floor::bind("127.0.0.1:0".parse().unwrap(), 1, Some(&forward)).await.unwrap();
        let addr = floor.local_addr().unwrap();
        let counts = floor.counts();
        tokio::spawn(floor.serve(std::future::pending()));

        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/connect/")).await.unwrap();
        // Three at once: relayed in order, one at a time, each answered.
        for (id, qos) in [(1, Qos::AtLeastOnce), (2, Qos::AtMostOnce), (3, Qos::ExactlyOnce)] {
            let send = Packet::Send(SendPacket { message_type: 1, qos, id, dup: false, payload: "ping".into() });
            ws.send(Message::Binary(send.encode())).await.unwrap();
        }
        let mut answers = Vec::new();
        while answers.len() < 2 {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => answers.push(Packet::decode(b).unwrap()),
                other => panic!("expected a packet, got {other:?}"),
            }
        }
        assert_eq!(
            answers,
            [
                Packet::Ack(Reply { id: 1, payload: "pong".into() }),
                Packet::Rec(Reply { id: 3, payload: "pong".into() })
            ]
        );
        ws.send(Message::Binary(Packet::Rel(3).encode())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(Packet::Com(3).encode()));
        assert!(counts.summary().ends_with("3 round trips relayed"), "{}", counts.summary());
        assert!(backend_counts.summary().contains("3 forward"), "{}", backend_counts.summary());
    }
}
