//! The backend API (docs/protocol.md §8): /send/ at qos 0/1/2 with aggregation, DUP
//! retransmits and the timeout answer; /sub/, /unsub/, occupy; signatures.

use std::time::Duration;

use futures_util::StreamExt;
use rainbow_client::{Event, Qos};
use rainbow_protocol::{Packet, Reply as PacketReply};
use serde_json::json;

use crate::harness::*;

async fn subscribed_client(
    gw: &TestGateway,
    backend: &Backend,
    channel: &str,
    reply: &'static str,
) -> (rainbow_client::Client, rainbow_client::Events) {
    let before = backend.calls("connect").len();
    let config = client_config(gw).handler(move |_| Some(reply.into()));
    let (client, events) = rainbow_client::Client::connect(config).await.unwrap();
    let identity = backend.wait_calls("connect", before + 1).await[before].identity();
    let (_, answer) = gw.api("/sub/", &[], json!({"identity": identity, "channel": channel}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    (client, events)
}

fn identity_of(backend: &Backend, n: usize) -> String {
    backend.calls("connect")[n].identity()
}

#[tokio::test]
async fn send_qos0_answers_at_once_and_delivers() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let (_client, mut events) = subscribed_client(&gw, &backend, "news", "").await;
    let (status, answer) =
        gw.api("/send/", &[("channel", "news"), ("msgtype", "1001"), ("qos", "0")], r#"{"n":1}"#).await;
    assert_eq!((status, answer), (200, json!({"status": 0})));
    match tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap() {
        Event::Message(m) => {
            assert_eq!((m.message_type, m.qos, &m.payload[..]), (1001, Qos::AtMostOnce, &br#"{"n":1}"#[..]));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn send_qos1_and_qos2_aggregate_receivers_and_reply_data() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let (_a, _ea) = subscribed_client(&gw, &backend, "room", "").await;
    let (_b, _eb) = subscribed_client(&gw, &backend, "room", "pong").await;
    for qos in ["1", "2"] {
        let (_, answer) =
            gw.api("/send/", &[("channel", "room"), ("msgtype", "5"), ("qos", qos), ("timeout", "5")], "ping").await;
        assert_eq!(answer, json!({"status": 0, "connections": 2, "data": "pong"}), "qos {qos}");
    }
    // Defaults: msgtype 1, qos 2.
    let (_, answer) = gw.api("/send/", &[("channel", "room")], "x").await;
    assert_eq!(answer["connections"], 2);
    assert_eq!(gw.metric("rainbow_messages_total{direction=\"out\",qos=\"2\"}").await, 4.0);
}

#[tokio::test]
async fn send_without_subscribers_and_bad_parameters() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let (_, answer) = gw.api("/send/", &[("channel", "nobody"), ("qos", "1")], "x").await;
    assert_eq!(answer, json!({"status": 0, "connections": 0, "data": ""}));
    let (_, answer) = gw.api("/send/", &[("channel", "c"), ("qos", "3")], "x").await;
    assert_eq!(answer, json!({"status": 1, "msg": "qos level error"}));
    let (_, answer) = gw.api("/send/", &[("qos", "1")], "x").await;
    assert_eq!(answer, json!({"status": 1, "msg": "channel miss"}));
    let (_, answer) = gw.api("/send/", &[("channel", "c"), ("msgtype", "70000")], "x").await;
    assert_eq!(answer, json!({"status": 1, "msg": "params error"}));
    let (_, answer) = gw.api("/send/", &[("channel", "c"), ("timeout", "soon")], "x").await;
    assert_eq!(answer, json!({"status": 1, "msg": "params error"}));
}

#[tokio::test]
async fn unacknowledged_sends_are_retransmitted_with_dup_until_answered() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("retransmit_interval", "300ms")]).await;
    let mut ws = raw_connect(&gw).await;
    let identity = backend.wait_calls("connect", 1).await[0].identity();
    gw.api("/sub/", &[], json!({"identity": identity, "channel": "c"}).to_string()).await;
    let api = tokio::spawn({
        let addr = gw.addr;
        async move {
            PeerApi(addr).send(&[("channel", "c"), ("msgtype", "9"), ("qos", "1"), ("timeout", "5")], "hello").await
        }
    });
    let Packet::Send(first) = next_packet(&mut ws).await else { panic!("expected a SEND") };
    assert!(!first.dup);
    assert_eq!((first.message_type, first.qos, &first.payload[..]), (9, Qos::AtLeastOnce, &b"hello"[..]));
    // Withhold the ACK: the same message comes again with DUP.
    let Packet::Send(again) = next_packet(&mut ws).await else { panic!("expected a retransmission") };
    assert!(again.dup);
    assert_eq!(again.id, first.id);
    send_packet(&mut ws, Packet::Ack(PacketReply { id: first.id, payload: "got it".into() })).await;
    let answer = api.await.unwrap();
    assert_eq!(answer, json!({"status": 0, "connections": 1, "data": "got it"}));
    assert!(gw.metric("rainbow_retransmits_total").await >= 1.0);
}

#[tokio::test]
async fn qos2_push_runs_rec_rel_com() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let mut ws = raw_connect(&gw).await;
    let identity = backend.wait_calls("connect", 1).await[0].identity();
    gw.api("/sub/", &[], json!({"identity": identity, "channel": "c"}).to_string()).await;
    let api = tokio::spawn({
        let addr = gw.addr;
        async move { PeerApi(addr).send(&[("channel", "c"), ("qos", "2")], "exactly").await }
    });
    let Packet::Send(send) = next_packet(&mut ws).await else { panic!("expected a SEND") };
    assert_eq!(send.qos, Qos::ExactlyOnce);
    send_packet(&mut ws, Packet::Rec(PacketReply { id: send.id, payload: "r".into() })).await;
    assert_eq!(next_packet(&mut ws).await, Packet::Rel(send.id));
    send_packet(&mut ws, Packet::Com(send.id)).await;
    assert_eq!(api.await.unwrap(), json!({"status": 0, "connections": 1, "data": "r"}));
}

#[tokio::test]
async fn silent_receivers_get_the_timeout_answer() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("retransmit_interval", "300ms")]).await;
    let mut ws = raw_connect(&gw).await;
    let identity = backend.wait_calls("connect", 1).await[0].identity();
    gw.api("/sub/", &[], json!({"identity": identity, "channel": "c"}).to_string()).await;
    let started = std::time::Instant::now();
    let (_, answer) = gw.api("/send/", &[("channel", "c"), ("qos", "1"), ("timeout", "1")], "hello?").await;
    assert_eq!(answer, json!({"status": 1, "msg": "timeout"}));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The raw client saw the message and its retransmissions.
    let mut dups = 0;
    while let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) =
        tokio::time::timeout(Duration::from_millis(100), futures_util::StreamExt::next(&mut ws)).await
    {
        if let Ok(Packet::Send(s)) = Packet::decode(b) {
            dups += usize::from(s.dup);
        }
    }
    assert!(dups >= 2, "expected DUP retransmissions, saw {dups}");
}

#[tokio::test]
async fn sub_unsub_and_occupy() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let (_a, _ea) = subscribed_client(&gw, &backend, "desk", "a").await;
    let (_b, _eb) = subscribed_client(&gw, &backend, "desk", "b").await;
    let (a, b) = (identity_of(&backend, 0), identity_of(&backend, 1));
    let count = |gw: &TestGateway| gw.gw.hub.subscribers("desk").len();
    assert_eq!(count(&gw), 2);

    let (_, answer) = gw.api("/sub/", &[], json!({"identity": a, "channel": "desk", "occupy": true}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    let (_, answer) = gw.api("/send/", &[("channel", "desk"), ("qos", "1")], "who").await;
    assert_eq!(answer, json!({"status": 0, "connections": 1, "data": "a"}), "occupy removed the other subscriber");

    let (_, answer) = gw.api("/unsub/", &[], json!({"identity": a, "channel": "desk"}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    assert_eq!(count(&gw), 0);
    let (_, answer) =
        gw.api("/sub/", &[], json!({"identity": b, "channel": "desk", "occupy": false}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    assert_eq!(count(&gw), 1);

    let nobody = "0".repeat(64);
    let (_, answer) = gw.api("/sub/", &[], json!({"identity": nobody, "channel": "desk"}).to_string()).await;
    assert_eq!(answer, json!({"status": 1, "msg": "no such connection"}));
    let (_, answer) = gw.api("/unsub/", &[], json!({"identity": nobody, "channel": "desk"}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    let (_, answer) = gw.api("/sub/", &[], "{not json").await;
    assert_eq!(answer, json!({"status": 1, "msg": "params error"}));
    let (_, answer) = gw.api("/sub/", &[], json!({"channel": "desk"}).to_string()).await;
    assert_eq!(answer, json!({"status": 1, "msg": "params error"}));
}

#[tokio::test]
async fn signature_failures_missing_wrong_stale_replayed() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let err = json!({"status": 1, "msg": "signature error"});
    let q = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>();
    let send = |pairs: Vec<(String, String)>| {
        let gw = &gw;
        async move { gw.raw_api("/send/", &[vec![("channel".to_string(), "c".to_string())], pairs].concat(), "x").await.1 }
    };
    // Missing.
    assert_eq!(send(vec![]).await, err);
    // Wrong token.
    let ts = rainbow_gateway::signature::unix_now().to_string();
    let wrong = rainbow_gateway::signature::signature("not-the-token", &ts, "77");
    assert_eq!(send(q(&[("timestamp", ts.clone()), ("nonce", "77".into()), ("signature", wrong)])).await, err);
    // Stale: 30 s old.
    let old = (rainbow_gateway::signature::unix_now() - 30).to_string();
    let stale = rainbow_gateway::signature::signature(TOKEN, &old, "77");
    assert_eq!(send(q(&[("timestamp", old), ("nonce", "77".into()), ("signature", stale)])).await, err);
    // Replayed: the first use works, the identical second one does not.
    let good = rainbow_gateway::signature::signature(TOKEN, &ts, "78");
    let pairs = q(&[("timestamp", ts.clone()), ("nonce", "78".into()), ("signature", good)]);
    assert_eq!(send(pairs.clone()).await, json!({"status": 0, "connections": 0, "data": ""}));
    assert_eq!(send(pairs).await, err);
    assert_eq!(gw.metric("rainbow_api_calls_total{endpoint=\"send\",outcome=\"signature_error\"}").await, 4.0);
    // Unsigned endpoints stay open.
    assert_eq!(reqwest::get(gw.http("/hello/")).await.unwrap().text().await.unwrap(), "ok");
}

/// API calls from a task that does not borrow the test gateway.
struct PeerApi(std::net::SocketAddr);

impl PeerApi {
    async fn send(&self, query: &[(&str, &str)], body: &'static str) -> serde_json::Value {
        let signed = rainbow_gateway::signature::sign(TOKEN);
        let mut pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        pairs.extend(signed.pairs().into_iter().map(|(k, v)| (k.to_string(), v)));
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let response =
            reqwest::Client::new().post(format!("http://{}/send/?{query}", self.0)).body(body).send().await.unwrap();
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }
}

/// Review bug 5: a push waiting for a free `max_in_flight` slot must not hold
/// back the answers to the client's own messages (they waited until the
/// push's deadline).
#[tokio::test]
async fn answers_are_not_held_behind_a_push_waiting_for_the_window() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("max_in_flight", "1"), ("retransmit_interval", "10s")]).await;
    let mut ws = raw_connect(&gw).await;
    let identity = backend.wait_calls("connect", 1).await[0].identity();
    let (_, answer) = gw.api("/sub/", &[], json!({"identity": identity, "channel": "c"}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    // Two qos-1 pushes: the first takes the only slot, the second waits.
    let push = |body: &'static str| {
        let base = gw.http("");
        tokio::spawn(async move {
            api_at(&base, "/send/", &[("channel", "c"), ("qos", "1"), ("timeout", "20")], body).await
        })
    };
    let first_push = push("p1");
    let Packet::Send(first) = next_packet(&mut ws).await else { panic!("expected the first push") };
    assert_eq!(&first.payload[..], b"p1");
    let second_push = push("p2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The client's own qos-1 message is answered at once.
    send_packet(
        &mut ws,
        Packet::Send(rainbow_protocol::SendPacket {
            message_type: 1,
            qos: Qos::AtLeastOnce,
            id: 7,
            dup: false,
            payload: "mine".into(),
        }),
    )
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(2), next_packet(&mut ws)).await;
    match answer {
        Ok(Packet::Ack(PacketReply { id: 7, payload })) => assert_eq!(&payload[..], b"echo:mine"),
        other => panic!("expected the ACK of our message within 2 s, got {other:?}"),
    }
    // Acknowledging the first push lets the second one out, in order.
    send_packet(&mut ws, Packet::Ack(PacketReply { id: 1, payload: Default::default() })).await;
    let Packet::Send(second) = next_packet(&mut ws).await else { panic!("expected the second push") };
    assert_eq!(&second.payload[..], b"p2");
    send_packet(&mut ws, Packet::Ack(PacketReply { id: second.id, payload: Default::default() })).await;
    assert_eq!(first_push.await.unwrap().1["connections"], 1);
    assert_eq!(second_push.await.unwrap().1["connections"], 1);
}
