//! Limits with defined behaviour, none affecting other connections: message
//! size (1009), malformed packets (1002), connection count (503), slow
//! consumers (1008), message rate (1008), the qos-2 window (1008).

use std::time::Duration;

use futures_util::SinkExt;
use rainbow_client::Qos;
use rainbow_protocol::{Packet, Send};
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
        let send = Send { message_type: 1, qos: Qos::AtMostOnce, id: 0, dup: false, payload: "spam".into() };
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
            Packet::Send(Send { message_type: 1, qos: Qos::ExactlyOnce, id, dup: false, payload: "x".into() }),
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
