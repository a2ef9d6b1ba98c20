//! Client → backend (docs/protocol.md §4, §5): forwards at qos 0/1/2 with replies, qos-2
//! dedup, cookies and channel headers, order, failures.

use std::time::Duration;

use futures_util::StreamExt;
use rainbow_client::{Event, Qos};
use rainbow_protocol::{Packet, Reply as PacketReply, SendPacket};
use serde_json::json;

use crate::harness::*;

/// An opaque cookie (by convention base64 JSON; the gateway never looks inside).
fn encode(s: &str) -> String {
    hex::encode(s)
}

#[tokio::test]
async fn forwards_at_every_qos_and_returns_the_reply() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();

    let reply = client.send(7, r#"{"id":1}"#, Qos::AtLeastOnce).await.unwrap();
    assert_eq!(&reply[..], br#"echo:{"id":1}"#);
    let reply = client.send(8, "two", Qos::ExactlyOnce).await.unwrap();
    assert_eq!(&reply[..], b"echo:two");
    client.send(9, "zero", Qos::AtMostOnce).await.unwrap();

    let calls = backend.wait_calls("forward", 3).await;
    assert_eq!(calls.iter().map(|c| c.message_type.unwrap()).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!(&calls[0].body[..], br#"{"id":1}"#);
    assert!(calls.iter().all(|c| c.signed_ok()));
    let identity = backend.calls("connect")[0].identity();
    assert!(calls.iter().all(|c| c.identity() == identity));
    assert!(calls[0].header("rainbowclientcookie").is_none(), "no cookie until one is set");
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"ok\"}").await, 3.0);
    assert_eq!(gw.metric("rainbow_messages_total{direction=\"in\",qos=\"1\"}").await, 1.0);
    client.close().await;
}

#[tokio::test]
async fn qos2_duplicate_before_rel_is_not_forwarded_again() {
    let backend = Backend::start().await;
    backend.on_forward(|_| Reply::ok("once").delay(Duration::from_millis(200)));
    let gw = TestGateway::start(&backend, &[]).await;
    let mut ws = raw_connect(&gw).await;
    let send = SendPacket { message_type: 3, qos: Qos::ExactlyOnce, id: 41, dup: false, payload: "x".into() };
    send_packet(&mut ws, Packet::Send(send.clone())).await;
    // A DUP while the first is still being forwarded: swallowed.
    send_packet(&mut ws, Packet::Send(SendPacket { dup: true, ..send.clone() })).await;
    let rec = PacketReply { id: 41, payload: "once".into() };
    assert_eq!(next_packet(&mut ws).await, Packet::Rec(rec.clone()));
    // A DUP after our REC (as if the REC was lost): the same REC again, no new forward.
    send_packet(&mut ws, Packet::Send(SendPacket { dup: true, ..send.clone() })).await;
    assert_eq!(next_packet(&mut ws).await, Packet::Rec(rec));
    send_packet(&mut ws, Packet::Rel(41)).await;
    assert_eq!(next_packet(&mut ws).await, Packet::Com(41));
    assert_eq!(backend.calls("forward").len(), 1, "exactly once");
    assert_eq!(gw.metric("rainbow_qos2_duplicates_total").await, 2.0);
    // After REL the id may be reused for a new message.
    send_packet(&mut ws, Packet::Send(send)).await;
    assert!(matches!(next_packet(&mut ws).await, Packet::Rec(_)));
    assert_eq!(backend.calls("forward").len(), 2);
}

#[tokio::test]
async fn failed_forward_sends_nothing_and_a_qos2_retransmission_is_processed() {
    let backend = Backend::start().await;
    backend.on_forward(|call| if call.body.as_ref() == b"first" { Reply::ok("").status(500) } else { Reply::ok("ok") });
    let gw = TestGateway::start(&backend, &[]).await;
    let mut ws = raw_connect(&gw).await;
    let send = SendPacket { message_type: 3, qos: Qos::ExactlyOnce, id: 5, dup: false, payload: "first".into() };
    send_packet(&mut ws, Packet::Send(send.clone())).await;
    backend.wait_calls("forward", 1).await;
    assert_silent(&mut ws, Duration::from_millis(300)).await;
    // The client's retransmission is processed because the id was forgotten.
    send_packet(&mut ws, Packet::Send(SendPacket { dup: true, payload: "second".into(), ..send })).await;
    assert_eq!(next_packet(&mut ws).await, Packet::Rec(PacketReply { id: 5, payload: "ok".into() }));
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"http_error\"}").await, 1.0);
}

#[tokio::test]
async fn cookie_and_channels_from_connect_and_forward_responses() {
    let backend = Backend::start().await;
    let cookie1 = encode(&json!({"user": "jeff"}).to_string());
    let cookie2 = encode(&json!({"user": "kit"}).to_string());
    backend.on_connect(
        Reply::ok(r#"{"status": "success"}"#)
            .header("rainbowclientcookie", &cookie1)
            .header("rainbowclientchannel", "lobby;;news"),
    );
    let c2 = cookie2.clone();
    backend.on_forward(move |_| {
        Reply::ok("renamed")
            .header("rainbowclientcookie", &c2)
            .header("rainbowclientchannelunsub", "lobby")
            .header("rainbowclientchannel", "room")
    });
    let gw = TestGateway::start(&backend, &[]).await;
    let (client, mut events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    gw.wait_connections(1).await;
    let channels =
        |gw: &TestGateway| gw.gw.hub.channel_counts().into_iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>();
    assert_eq!(channels(&gw), ["lobby", "news"]);

    client.send(0, "rename", Qos::AtLeastOnce).await.unwrap();
    let forward = &backend.wait_calls("forward", 1).await[0];
    assert_eq!(forward.header("rainbowclientcookie"), Some(cookie1), "cookie from the connect hook is sent back");
    assert_eq!(channels(&gw), ["news", "room"], "unsub applied, then sub");

    client.send(1, "again", Qos::AtLeastOnce).await.unwrap();
    let calls = backend.wait_calls("forward", 2).await;
    assert_eq!(calls[1].header("rainbowclientcookie"), Some(cookie2.clone()), "the forward hook replaced the cookie");

    // The subscription is real: a push to "room" arrives.
    let (_, answer) = gw.api("/send/", &[("channel", "room"), ("msgtype", "1002"), ("qos", "0")], "hi").await;
    assert_eq!(answer, json!({"status": 0}));
    let event = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert!(matches!(event, Event::Message(ref m) if m.message_type == 1002 && &m.payload[..] == b"hi"), "{event:?}");

    client.close().await;
    let close = &backend.wait_calls("close", 1).await[0];
    assert_eq!(close.header("rainbowclientcookie"), Some(cookie2), "close hook carries the cookie");
}

#[tokio::test]
async fn messages_of_one_connection_reach_the_backend_in_order() {
    let backend = Backend::start().await;
    // Earlier messages are slower, so any concurrency would reorder them.
    backend.on_forward(|call| {
        let n: u64 = String::from_utf8_lossy(&call.body).parse().unwrap_or(0);
        Reply::ok("").delay(Duration::from_millis(20u64.saturating_sub(n * 2)))
    });
    let gw = TestGateway::start(&backend, &[]).await;
    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    for n in 0..10 {
        client.send(1, n.to_string(), Qos::AtMostOnce).await.unwrap();
    }
    let calls = backend.wait_calls("forward", 10).await;
    let order: Vec<String> = calls.iter().map(|c| String::from_utf8_lossy(&c.body).into_owned()).collect();
    assert_eq!(order, (0..10).map(|n| n.to_string()).collect::<Vec<_>>());
    client.close().await;
}

#[tokio::test]
async fn a_slow_backend_times_out_and_the_client_gets_no_reply() {
    let backend = Backend::start().await;
    backend.on_forward(|_| Reply::ok("late").delay(Duration::from_secs(2)));
    let gw = TestGateway::start(&backend, &[("forward_timeout", "200ms")]).await;
    let mut ws = raw_connect(&gw).await;
    send_packet(
        &mut ws,
        Packet::Send(SendPacket { message_type: 1, qos: Qos::AtLeastOnce, id: 1, dup: false, payload: "x".into() }),
    )
    .await;
    assert_silent(&mut ws, Duration::from_millis(800)).await;
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"timeout\"}").await, 1.0);
}

#[tokio::test]
async fn a_full_forward_queue_pauses_reading_and_every_message_is_still_answered() {
    let backend = Backend::start().await;
    backend.on_forward(|call| Reply::ok(&String::from_utf8_lossy(&call.body)).delay(Duration::from_millis(15)));
    // Two may wait while one is at the backend: the client's 12 messages fill
    // the queue again and again, so the driver pauses reading and must be
    // woken each time the forward task makes room.
    let gw = TestGateway::start(&backend, &[("max_pending_forwards", "2"), ("forward_concurrency", "1")]).await;
    let mut ws = raw_connect(&gw).await;
    for id in 1..=12u16 {
        let payload = format!("m{id}");
        send_packet(
            &mut ws,
            Packet::Send(SendPacket {
                message_type: 1,
                qos: Qos::AtLeastOnce,
                id,
                dup: false,
                payload: payload.into(),
            }),
        )
        .await;
    }
    let mut acked = Vec::new();
    while acked.len() < 12 {
        match next_packet(&mut ws).await {
            Packet::Ack(PacketReply { id, payload }) => {
                assert_eq!(payload, format!("m{id}").as_bytes(), "the reply of message {id}");
                acked.push(id);
            }
            other => panic!("expected an ACK, got {other:?}"),
        }
    }
    assert_eq!(acked, (1..=12).collect::<Vec<_>>(), "answered in order, none stuck behind the paused reader");
    let bodies: Vec<String> =
        backend.calls("forward").iter().map(|c| String::from_utf8_lossy(&c.body).into_owned()).collect();
    assert_eq!(bodies, (1..=12).map(|n| format!("m{n}")).collect::<Vec<_>>());
    assert!(gw.metric("rainbow_forward_queue_full_total").await >= 1.0, "the reader paused at least once");
}

/// A qos-1 message whose forward the backend answers with `reply` after
/// 300 ms; the client leaves meanwhile. Returns once the close hook ran and
/// the call completed.
async fn leave_during_a_forward(backend: &Backend, reply: Reply) -> TestGateway {
    backend.on_forward(move |_| reply.clone().delay(Duration::from_millis(300)));
    let gw = TestGateway::start(backend, &[]).await;
    let mut ws = raw_connect(&gw).await;
    send_packet(
        &mut ws,
        Packet::Send(SendPacket { message_type: 1, qos: Qos::AtLeastOnce, id: 1, dup: false, payload: "x".into() }),
    )
    .await;
    backend.wait_calls("forward", 1).await;
    drop(ws);
    backend.wait_calls("close", 1).await;
    // The call is not cancelled with the connection: the backend may already
    // be acting on it, so the gateway waits for its answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while gw.metric("rainbow_forwards_total{outcome=\"ok\"}").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the forward call was abandoned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw
}

#[tokio::test]
async fn a_call_under_way_completes_after_the_client_leaves() {
    let backend = Backend::start().await;
    leave_during_a_forward(&backend, Reply::ok("late")).await;
}

#[tokio::test]
async fn forward_concurrency_above_one_calls_the_backend_in_parallel() {
    let backend = Backend::start().await;
    backend.on_forward(|call| Reply::ok(&String::from_utf8_lossy(&call.body)).delay(Duration::from_secs(1)));
    let gw = TestGateway::start(&backend, &[("forward_concurrency", "4")]).await;
    let mut ws = raw_connect(&gw).await;
    for id in 1..=4u16 {
        let payload = format!("m{id}");
        send_packet(
            &mut ws,
            Packet::Send(SendPacket {
                message_type: 1,
                qos: Qos::AtLeastOnce,
                id,
                dup: false,
                payload: payload.into(),
            }),
        )
        .await;
    }
    // One at a time, the second call would start only after the first's
    // answer (1 s); four drains have all four under way at once.
    let started = tokio::time::timeout(Duration::from_millis(800), backend.wait_calls("forward", 4)).await;
    assert!(started.is_ok(), "the four calls did not run at once: {} started", backend.calls("forward").len());
    let mut acked = Vec::new();
    while acked.len() < 4 {
        match next_packet(&mut ws).await {
            Packet::Ack(PacketReply { id, payload }) => {
                assert_eq!(payload, format!("m{id}").as_bytes());
                acked.push(id);
            }
            other => panic!("expected an ACK, got {other:?}"),
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, [1, 2, 3, 4]);
}

/// Review bug 1 (phantom subscriber): a forward answered after its client
/// left carries `RAINBOWCLIENTCHANNEL`; the connection it names is gone and
/// must not be subscribed (it would stay in the channel map for ever).
#[tokio::test]
async fn a_late_answer_does_not_subscribe_a_connection_that_is_gone() {
    let backend = Backend::start().await;
    let gw = leave_during_a_forward(&backend, Reply::ok("late").header("rainbowclientchannel", "ghost")).await;
    gw.wait_connections(0).await;
    let info: serde_json::Value = reqwest::get(gw.http("/serverinfo/?cluster=1")).await.unwrap().json().await.unwrap();
    assert_eq!(info["nodes"][0]["channels"], json!({}), "{info}");
    assert_eq!(info["nodes"][0]["connections"], 0);
}

/// A context (cookie) the backend set is sent back on the next calls byte
/// for byte, non-ASCII (obs-text) included.
#[tokio::test]
async fn a_non_ascii_cookie_from_the_backend_goes_back_unchanged() {
    let backend = Backend::start().await;
    backend.on_forward(|_| Reply::ok("ok").header("rainbowclientcookie", "café=1"));
    let gw = TestGateway::start(&backend, &[]).await;
    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    client.send(1, "first", Qos::AtLeastOnce).await.unwrap();
    client.send(1, "second", Qos::AtLeastOnce).await.unwrap();
    let calls = backend.wait_calls("forward", 2).await;
    assert_eq!(calls[1].headers.get("rainbowclientcookie").map(|v| v.as_bytes()), Some("café=1".as_bytes()));
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"ok\"}").await, 2.0);
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"unreachable\"}").await, 0.0);
    client.close().await;
    let close = &backend.wait_calls("close", 1).await[0];
    assert_eq!(close.headers.get("rainbowclientcookie").map(|v| v.as_bytes()), Some("café=1".as_bytes()));
}

/// Found while writing docs/protocol.md: while the forward queue is full the
/// gateway stops reading the client (backpressure), so it cannot see the
/// client's pongs; it closed a live client with 1001 "ping timeout".
#[tokio::test]
async fn backpressure_does_not_count_against_the_clients_liveness() {
    let backend = Backend::start().await;
    backend.on_forward(|call| Reply::ok(&String::from_utf8_lossy(&call.body)).delay(Duration::from_millis(1500)));
    let extra = [("ping_interval", "1s"), ("pong_timeout", "1s"), ("max_pending_forwards", "1")];
    let gw = TestGateway::start(&backend, &extra).await;
    let (mut sink, mut stream) = futures_util::StreamExt::split(raw_connect(&gw).await);
    for id in 1..=3u16 {
        let send =
            SendPacket { message_type: 1, qos: Qos::AtLeastOnce, id, dup: false, payload: format!("m{id}").into() };
        futures_util::SinkExt::send(
            &mut sink,
            tokio_tungstenite::tungstenite::Message::Binary(Packet::Send(send).encode()),
        )
        .await
        .unwrap();
    }
    // Reading answers the gateway's pings; the answers come 1.5 s apart.
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while acked < 3 {
        let message = tokio::time::timeout_at(deadline, stream.next()).await.expect("the ACKs did not all come");
        match message {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                assert!(matches!(Packet::decode(b), Ok(Packet::Ack(_))));
                acked += 1;
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => panic!("closed: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(gw.metric("rainbow_disconnects_total{reason=\"ping_timeout\"}").await, 0.0);
}
