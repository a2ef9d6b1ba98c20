//! Limits with defined behaviour, none affecting other connections: message
//! size (1009), malformed packets (1002), connection count (503), slow
//! consumers (1008), message rate (1008), the qos-2 window (1008), WebSocket
//! framing errors (1002, 1007); and bytes sent along with the handshake.

use std::time::Duration;

use futures_util::SinkExt;
use rainbow_client::Qos;
use rainbow_protocol::{Packet, SendPacket};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// A second, healthy client still gets replies.
async fn others_unaffected(gw: &TestGateway) {
    let (client, _events) = rainbow_client::Client::connect(client_config(gw)).await.unwrap();
    assert_eq!(&client.send(1, "still fine", Qos::AtLeastOnce).await.unwrap()[..], b"echo:still fine");
    client.close().await;
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("max_message_size", "1KiB")]).await;
    let mut ws = raw_connect(&gw).await;
    ws.send(Message::Binary(vec![0x10; 4096].into())).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    others_unaffected(&gw).await;
    assert_eq!(gw.metric("rainbow_disconnects_total{reason=\"too_big\"}").await, 1.0);
}

#[tokio::test]
async fn malformed_packet_closes_with_1002_and_is_counted() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let mut ws = raw_connect(&gw).await;
    ws.send(Message::Binary(vec![0x70, 0, 1].into())).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1002);
    assert!(reason.contains("unknown command 7"), "{reason}");
    let mut ws = raw_connect(&gw).await;
    ws.send(Message::Binary(vec![0x12, 0].into())).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1002);
    assert!(reason.contains("truncated"), "{reason}");
    assert_eq!(gw.metric("rainbow_protocol_errors_total{kind=\"unknown_command\"}").await, 1.0);
    assert_eq!(gw.metric("rainbow_protocol_errors_total{kind=\"truncated\"}").await, 1.0);
    others_unaffected(&gw).await;
    // Both ended connections ran their close hook.
    backend.wait_calls("close", 3).await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("max_connections", "2")]).await;
    let _a = raw_connect(&gw).await;
    let _b = raw_connect(&gw).await;
    assert_eq!(refused_status(&gw.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 503);
    assert_eq!(backend.calls("connect").len(), 2, "refused before the connect hook");
    drop(_a);
    gw.wait_connections(1).await;
    let _c = raw_connect(&gw).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_as_slow_consumer() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("outbox_capacity", "8")]).await;
    let _stalled = raw_connect(&gw).await; // never read from
    let stalled_id = backend.wait_calls("connect", 1).await[0].identity();
    let (reader, mut events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    let reader_id = backend.wait_calls("connect", 2).await[1].identity();
    for identity in [&stalled_id, &reader_id] {
        gw.api("/sub/", &[], json!({"identity": identity, "channel": "firehose"}).to_string()).await;
    }
    let chunk = "x".repeat(256 * 1024);
    let reading = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut events)).await
        {
            n += 1;
        }
        n
    });
    let mut sent = 0;
    for _ in 0..400 {
        gw.api("/send/", &[("channel", "firehose"), ("qos", "0")], chunk.clone()).await;
        sent += 1;
        if gw.gw.hub.subscribers("firehose").len() == 1 {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.metric("rainbow_disconnects_total{reason=\"slow_consumer\"}").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled client was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.gw.hub.subscribers("firehose").len(), 1, "only the reader remains");
    // The reader got every message despite its neighbour.
    reader.close().await;
    let received = reading.await.unwrap();
    assert!(received >= sent, "reader received {received} of {sent}");
}

#[tokio::test]
async fn a_client_over_the_message_rate_is_closed_with_1008() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("max_message_rate", "5")]).await;
    let mut ws = raw_connect(&gw).await;
    for _ in 0..20 {
        let send = SendPacket { message_type: 1, qos: Qos::AtMostOnce, id: 0, dup: false, payload: "spam".into() };
        if ws.send(Message::Binary(Packet::Send(send).encode())).await.is_err() {
            break;
        }
    }
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1008, "message rate limit exceeded"));
    assert!(backend.calls("forward").len() <= 10, "at most the burst was forwarded");
    others_unaffected(&gw).await;
}

#[tokio::test]
async fn too_many_unreleased_qos2_messages_close_with_1008() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("qos2_window", "2")]).await;
    let mut ws = raw_connect(&gw).await;
    for id in 1..=3 {
        send_packet(
            &mut ws,
            Packet::Send(SendPacket { message_type: 1, qos: Qos::ExactlyOnce, id, dup: false, payload: "x".into() }),
        )
        .await;
    }
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("await their REL"), "{reason}");
}

#[tokio::test]
async fn api_body_over_the_limit_is_refused_with_413() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("max_message_size", "1KiB")]).await;
    let (status, answer) = gw.api("/send/", &[("channel", "c")], "x".repeat(4096)).await;
    assert_eq!(status, 413);
    assert_eq!(answer["status"], 1);
}

/// A raw TCP client: the handshake request, then `frames` in the same write
/// (as a client that does not wait for the 101 may send them). Returns the
/// stream after the 101 answer, and what followed it in the same read.
async fn raw_handshake(gw: &TestGateway, frames: &[u8]) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut request = format!(
        "GET /connect/ HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         X-DEVICEID: raw\r\nX-CLIENT-OS: test\r\n\r\n",
        gw.addr
    )
    .into_bytes();
    request.extend_from_slice(frames);
    stream.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    let end = loop {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed during the handshake");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    (stream, got.split_off(end))
}

/// Reads server frames until a close frame; returns its code.
async fn raw_close_code(stream: &mut tokio::net::TcpStream, mut got: Vec<u8>) -> u16 {
    use tokio::io::AsyncReadExt;
    loop {
        // Server frames: unmasked, and these are short (7-bit lengths).
        while got.len() >= 2 && got.len() >= 2 + usize::from(got[1] & 0x7F) {
            let len = usize::from(got[1] & 0x7F);
            if got[0] & 0x0F == 8 {
                return u16::from_be_bytes([got[2], got[3]]);
            }
            got.drain(..2 + len);
        }
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed without a close frame");
        got.extend_from_slice(&buf[..n]);
    }
}

fn masked(opcode: rainbow_protocol::websocket::OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rainbow_protocol::websocket::encode_masked(true, opcode, payload, [9, 8, 7, 6], &mut out);
    out
}

#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_not_lost() {
    use rainbow_protocol::websocket::OpCode;
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let send = SendPacket { message_type: 3, qos: Qos::AtLeastOnce, id: 1, dup: false, payload: "early".into() };
    let (mut stream, got) = raw_handshake(&gw, &masked(OpCode::Binary, &Packet::Send(send).encode())).await;
    // The SEND that hyper read along with the request is forwarded and
    // answered.
    let calls = backend.wait_calls("forward", 1).await;
    assert_eq!(&calls[0].body[..], b"early");
    let mut answer = got;
    while answer.len() < 2 || answer.len() < 2 + usize::from(answer[1] & 0x7F) {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answer[0], 0x82, "a binary frame");
    let packet = Packet::decode(answer[2..2 + usize::from(answer[1])].to_vec().into()).unwrap();
    assert_eq!(packet, Packet::Ack(rainbow_protocol::Reply { id: 1, payload: "echo:early".into() }));
}

#[tokio::test]
async fn websocket_framing_errors_close_with_1002_or_1007() {
    use rainbow_protocol::websocket::OpCode;
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    // Text that is not UTF-8: 1007.
    let (mut stream, got) = raw_handshake(&gw, &masked(OpCode::Text, b"\x10\x00\x01\xff")).await;
    assert_eq!(raw_close_code(&mut stream, got).await, 1007);
    // A client frame without a mask: 1002.
    let (mut stream, got) = raw_handshake(&gw, b"\x82\x03\x10\x00\x01").await;
    assert_eq!(raw_close_code(&mut stream, got).await, 1002);
    // Reserved bits: 1002.
    let mut rsv = masked(OpCode::Binary, b"\x10\x00\x01");
    rsv[0] |= 0x40;
    let (mut stream, got) = raw_handshake(&gw, &rsv).await;
    assert_eq!(raw_close_code(&mut stream, got).await, 1002);
    assert_eq!(gw.metric("rainbow_protocol_errors_total{kind=\"websocket\"}").await, 3.0);
    others_unaffected(&gw).await;
}
