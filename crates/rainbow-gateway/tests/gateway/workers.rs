//! Workers, in process (docs/worker-protocol.md): the signed handshake,
//! connect/message/close through a worker, API calls, credits, the bounded
//! queue, failures, protocol errors with requeue, draining, routing and
//! `/serverinfo/`. Crash tests with real processes are in `worker_crash`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rainbow_client::{Event, Qos};
use rainbow_protocol::{Packet, Reply as PacketReply, SendPacket};
use rainbow_worker::{Message, Reply, Task, Worker};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::harness::*;
use crate::worker_harness::*;

const WORKERS_ONLY: (&str, &str) = ("worker_route", "workers");

async fn handshake_status(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        Ok(_) => (101, Value::Null),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

#[tokio::test]
async fn the_handshake_is_signed_and_a_replayed_url_is_refused() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let refusal = json!({"status": 1, "msg": "signature error"});
    assert_eq!(handshake_status(&worker_url(&gw)).await, (401, refusal.clone()), "unsigned");
    let forged = format!(
        "{}?timestamp={}&nonce=1&signature={}",
        worker_url(&gw),
        rainbow_gateway::signature::unix_now(),
        "0".repeat(40)
    );
    assert_eq!(handshake_status(&forged).await, (401, refusal.clone()), "wrong signature");
    let url = signed_worker_url(&gw, "w1");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let welcome = match ws.next().await {
        Some(Ok(WsMessage::Binary(b))) => decode(&b).0,
        other => panic!("{other:?}"),
    };
    assert_eq!((welcome["op"].as_str(), welcome["version"].as_u64()), (Some("welcome"), Some(1)));
    assert!(welcome["node"].is_string() && welcome["worker"].is_u64(), "{welcome}");
    assert_eq!(handshake_status(&url).await, (401, refusal), "the same URL again is a replay");
    assert_eq!(gw.metric("rainbow_api_calls_total{endpoint=\"worker\",outcome=\"signature_error\"}").await, 3.0);
}

#[tokio::test]
async fn connect_message_and_close_go_through_a_worker_with_controls() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let closes: Arc<Mutex<Vec<Task>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Task>>> = Arc::default();
    let (closes2, seen2) = (closes.clone(), seen.clone());
    let worker = Worker::new(worker_config(&gw, "app"))
        .on_connect(|task, _| async move {
            if task.param("deny").is_some() {
                Reply::deny()
            } else if task.header("x-deviceid").is_none() || task.remote.is_none() {
                Reply::error("connect task without headers or remote")
            } else {
                Reply::accept().context("c1").subscribe("lobby")
            }
        })
        .on_message(7, move |task, _| {
            let seen = seen2.clone();
            async move {
                let context = format!("{}+", task.context.clone().unwrap_or_default());
                let reply = Reply::new(format!("re:{}", String::from_utf8_lossy(&task.payload)));
                seen.lock().unwrap().push(task);
                reply.context(context).unsubscribe("lobby").subscribe("room")
            }
        })
        .on_close(move |task, _| {
            let closes = closes2.clone();
            async move {
                closes.lock().unwrap().push(task);
                Reply::empty()
            }
        });
    let running = tokio::spawn(worker.run());
    wait_workers(&gw, 1).await;

    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    gw.wait_connections(1).await;
    let channels =
        |gw: &TestGateway| gw.gw.hub.channel_counts().into_iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>();
    assert_eq!(channels(&gw), ["lobby"], "the connect reply's sub was applied");
    assert_eq!(&client.send(7, "hi", Qos::AtLeastOnce).await.unwrap()[..], b"re:hi");
    assert_eq!(channels(&gw), ["room"], "unsub, then sub");
    assert_eq!(&client.send(7, "two", Qos::ExactlyOnce).await.unwrap()[..], b"re:two");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].context.as_deref(), Some("c1"), "the connect reply's context");
        assert_eq!(seen[1].context.as_deref(), Some("c1+"), "the message reply's context");
        assert_eq!((seen[0].qos, seen[1].qos, seen[0].attempt), (1, 2, 1));
        assert_eq!(seen[0].identity.len(), 64);
        assert_ne!(seen[0].key, seen[1].key);
    }
    // No handler for type 8: the worker answers with an error, the client
    // gets no reply (as with a failing webhook).
    let lost = client.send_with_timeout(8, "x", Qos::AtLeastOnce, Duration::from_millis(400)).await;
    assert!(lost.is_err());
    assert!(gw.metric("rainbow_forwards_total{outcome=\"worker_error\"}").await >= 1.0);

    let identity = seen.lock().unwrap()[0].identity.clone();
    client.close().await;
    wait_for("the close task", || !closes.lock().unwrap().is_empty()).await;
    let close = closes.lock().unwrap()[0].clone();
    assert_eq!((close.identity.as_str(), close.context.as_deref()), (identity.as_str(), Some("c1++")));

    let denied = format!("{}?deny=1", gw.ws_url());
    assert_eq!(refused_status(&denied, &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 401);
    assert_eq!(gw.metric("rainbow_connects_total{outcome=\"denied\"}").await, 1.0);
    assert!(
        backend.calls("connect").is_empty() && backend.calls("forward").is_empty() && backend.calls("close").is_empty()
    );
    running.abort();
}

#[tokio::test]
async fn a_worker_can_do_what_the_http_api_does() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let identities: Arc<Mutex<Vec<String>>> = Arc::default();
    let closed: Arc<Mutex<Vec<String>>> = Arc::default();
    let (ids, closed2) = (identities.clone(), closed.clone());
    let worker = Worker::new(worker_config(&gw, "api"))
        .on_connect(move |task, _| {
            let ids = ids.clone();
            async move {
                ids.lock().unwrap().push(task.identity);
                Reply::accept()
            }
        })
        .on_close(move |task, _| {
            let closed = closed2.clone();
            async move {
                closed.lock().unwrap().push(task.identity);
                Reply::empty()
            }
        });
    let api = worker.handle().api();
    let running = tokio::spawn(worker.run());
    wait_workers(&gw, 1).await;
    let (client, mut events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    let me = identities.lock().unwrap()[0].clone();

    assert_eq!(api.sub(&me, "room", false).await.unwrap(), json!({"status": 0}));
    let answer = api.send("room", Message::new(1001, "news").qos(1)).await.unwrap();
    assert_eq!(answer, json!({"status": 0, "connections": 1, "data": ""}));
    let got = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert!(matches!(got, Event::Message(ref m) if m.message_type == 1001 && &m.payload[..] == b"news"), "{got:?}");
    let answer = api.push(&me, Message::new(1002, "just you").qos(2)).await.unwrap();
    assert_eq!(answer["connections"], 1);
    let got = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert!(matches!(got, Event::Message(ref m) if &m.payload[..] == b"just you"), "{got:?}");
    assert_eq!(api.push(&"0".repeat(64), Message::new(1, "x").qos(0)).await.unwrap(), json!({"status": 0}));
    assert_eq!(api.unsub(&me, "room").await.unwrap(), json!({"status": 0}));
    assert_eq!(api.send("room", Message::new(1, "x").qos(1)).await.unwrap()["connections"], 0);
    assert_eq!(api.sub("nobody", "room", false).await.unwrap(), json!({"status": 1, "msg": "no such connection"}));
    assert_eq!(api.send("", Message::new(1, "x")).await.unwrap(), json!({"status": 1, "msg": "channel miss"}));

    assert_eq!(api.close(&me, "bye").await.unwrap(), json!({"status": 0}));
    let ended = loop {
        match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            Some(Event::Closed { code, reason }) => break (code, reason),
            Some(_) => continue,
            None => panic!("events ended without Closed"),
        }
    };
    assert_eq!(ended, (Some(1000), "bye".to_string()));
    wait_for("the close task after the worker's close", || closed.lock().unwrap().contains(&me)).await;
    assert!(gw.metric("rainbow_worker_calls_total{op=\"send\",outcome=\"ok\"}").await >= 2.0);
    drop(client);
    running.abort();
}

#[tokio::test]
async fn credits_bound_the_tasks_a_worker_holds() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY, ("worker_events", "message")]).await;
    let mut w = RawWorker::attach(&gw, 1).await;
    let mut clients = Vec::new();
    for n in 0..3u16 {
        let mut ws = raw_connect(&gw).await;
        let send = SendPacket {
            message_type: 1,
            qos: Qos::AtLeastOnce,
            id: n + 1,
            dup: false,
            payload: format!("m{n}").into(),
        };
        send_packet(&mut ws, Packet::Send(send)).await;
        clients.push(ws);
    }
    let (first, _) = w.task().await;
    w.silent(Duration::from_millis(300)).await;
    assert_eq!(gw.metric("rainbow_worker_tasks_in_flight").await, 1.0);
    assert_eq!(gw.metric("rainbow_worker_tasks_queued").await, 2.0);
    // Raising the window lets the two waiting tasks through without a reply.
    w.send(json!({"op": "credit", "credits": 3}), b"").await;
    let (second, _) = w.task().await;
    let (third, _) = w.task().await;
    for t in [&first, &second, &third] {
        w.reply(t, json!({}), format!("r{}", t["task"]).as_bytes()).await;
    }
    for (n, ws) in clients.iter_mut().enumerate() {
        assert!(matches!(next_packet(ws).await, Packet::Ack(PacketReply { id, .. }) if id == n as u16 + 1));
    }
    assert_eq!(gw.metric("rainbow_worker_replies_total{outcome=\"ok\"}").await, 3.0);
}

#[tokio::test]
async fn a_library_worker_with_credit_1_never_runs_two_tasks_at_once() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY]).await;
    for credits in [1usize, 3] {
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n2, m2) = (now.clone(), max.clone());
        let worker =
            Worker::new(worker_config(&gw, "counting").credits(credits as u32)).on_any_message(move |task, _| {
                let (now, max) = (n2.clone(), m2.clone());
                async move {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(running, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Reply::new(task.payload)
                }
            });
        let handle = worker.handle();
        let running = tokio::spawn(worker.run());
        wait_workers(&gw, 1).await;
        let mut sends = Vec::new();
        for c in 0..6 {
            let gw_cfg = client_config(&gw);
            sends.push(tokio::spawn(async move {
                let (client, _events) = rainbow_client::Client::connect(gw_cfg).await.unwrap();
                for i in 0..8 {
                    let payload = format!("{c}-{i}");
                    assert_eq!(client.send(1, payload.clone(), Qos::AtLeastOnce).await.unwrap(), payload.as_bytes());
                }
                client.close().await;
            }));
        }
        for s in sends {
            s.await.unwrap();
        }
        let max = max.load(Ordering::SeqCst);
        if credits == 1 {
            assert_eq!(max, 1, "credit 1: never two tasks at once");
        } else {
            assert!((2..=credits).contains(&max), "{max} tasks at once with {credits} credits");
        }
        handle.drain();
        tokio::time::timeout(WAIT, running).await.unwrap().unwrap().unwrap();
        wait_workers(&gw, 0).await;
    }
}

#[tokio::test]
async fn a_full_queue_drops_qos0_counts_it_and_leaves_qos1_unanswered_until_retransmitted() {
    let backend = Backend::start().await;
    let gw =
        TestGateway::start(&backend, &[WORKERS_ONLY, ("worker_queue_size", "1"), ("worker_events", "message")]).await;
    let send = |qos, id, payload: &str| {
        Packet::Send(SendPacket { message_type: 1, qos, id, dup: false, payload: payload.to_owned().into() })
    };
    // No worker: the first message waits in the queue (size 1)...
    let mut a = raw_connect(&gw).await;
    send_packet(&mut a, send(Qos::AtLeastOnce, 1, "queued")).await;
    wait_for("one queued task", || gw.gw.backend.workers().queued() == 1).await;
    // ...the next ones find it full: qos 0 is dropped and counted, qos 1 and
    // 2 get no answer.
    let mut b = raw_connect(&gw).await;
    send_packet(&mut b, send(Qos::AtMostOnce, 0, "dropped")).await;
    let mut c = raw_connect(&gw).await;
    send_packet(&mut c, send(Qos::AtLeastOnce, 7, "overflow")).await;
    let mut d = raw_connect(&gw).await;
    send_packet(&mut d, send(Qos::ExactlyOnce, 9, "overflow2")).await;
    let dropped = "rainbow_worker_tasks_dropped_total{kind=\"message\",reason=\"queue_full\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.metric(dropped).await < 3.0 {
        assert!(tokio::time::Instant::now() < deadline, "overflow not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_silent(&mut c, Duration::from_millis(300)).await;
    assert_silent(&mut d, Duration::from_millis(10)).await;
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"worker_queue_full\"}").await, 3.0);

    // A worker attaches: the queued message is answered; the clients'
    // retransmissions of the refused ones are processed.
    let running = tokio::spawn(
        Worker::new(worker_config(&gw, "late")).on_any_message(|task, _| async move { Reply::new(task.payload) }).run(),
    );
    assert_eq!(next_packet(&mut a).await, Packet::Ack(PacketReply { id: 1, payload: "queued".into() }));
    send_packet(
        &mut c,
        Packet::Send(SendPacket {
            message_type: 1,
            qos: Qos::AtLeastOnce,
            id: 7,
            dup: true,
            payload: "overflow".into(),
        }),
    )
    .await;
    assert_eq!(next_packet(&mut c).await, Packet::Ack(PacketReply { id: 7, payload: "overflow".into() }));
    send_packet(
        &mut d,
        Packet::Send(SendPacket {
            message_type: 1,
            qos: Qos::ExactlyOnce,
            id: 9,
            dup: true,
            payload: "overflow2".into(),
        }),
    )
    .await;
    assert_eq!(next_packet(&mut d).await, Packet::Rec(PacketReply { id: 9, payload: "overflow2".into() }));
    assert_silent(&mut b, Duration::from_millis(100)).await;
    running.abort();
}

#[tokio::test]
async fn a_task_waits_at_most_the_queue_timeout() {
    let backend = Backend::start().await;
    let timeout = ("worker_queue_timeout", "300ms");
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY, timeout, ("worker_events", "message")]).await;
    let mut ws = raw_connect(&gw).await;
    let send = SendPacket { message_type: 1, qos: Qos::ExactlyOnce, id: 3, dup: false, payload: "x".into() };
    send_packet(&mut ws, Packet::Send(send)).await;
    assert_silent(&mut ws, Duration::from_millis(600)).await;
    assert_eq!(gw.metric("rainbow_worker_tasks_dropped_total{kind=\"message\",reason=\"queue_timeout\"}").await, 1.0);
    assert_eq!(gw.gw.backend.workers().queued(), 0);
    // A connect routed to workers with none attached waits too, then 503.
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY, timeout]).await;
    assert_eq!(refused_status(&gw.ws_url(), &[("X-DEVICEID", "d"), ("X-CLIENT-OS", "o")]).await, 503);
    assert_eq!(gw.metric("rainbow_connects_total{outcome=\"backend_error\"}").await, 1.0);
}

#[tokio::test]
async fn error_replies_and_timeouts_fail_like_a_webhook_and_late_replies_free_the_credit() {
    let backend = Backend::start().await;
    let gw =
        TestGateway::start(&backend, &[WORKERS_ONLY, ("worker_events", "message"), ("forward_timeout", "500ms")]).await;
    let mut w = RawWorker::attach(&gw, 1).await;
    let mut ws = raw_connect(&gw).await;
    let send = SendPacket { message_type: 2, qos: Qos::ExactlyOnce, id: 4, dup: false, payload: "p".into() };
    send_packet(&mut ws, Packet::Send(send.clone())).await;
    let (task, _) = w.task().await;
    w.reply(&task, json!({"error": "database down"}), b"").await;
    assert_silent(&mut ws, Duration::from_millis(200)).await;
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"worker_error\"}").await, 1.0);
    // The qos-2 id was forgotten: the retransmission is a new task.
    send_packet(&mut ws, Packet::Send(SendPacket { dup: true, ..send.clone() })).await;
    let (task2, body) = w.task().await;
    assert_ne!(task2["key"], task["key"]);
    assert_eq!(&body[..], b"p");
    // Never answered within forward_timeout: failed, but the worker keeps
    // the credit until it answers late.
    assert_silent(&mut ws, Duration::from_millis(700)).await;
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"worker_timeout\"}").await, 1.0);
    send_packet(&mut ws, Packet::Send(SendPacket { dup: true, ..send })).await;
    w.silent(Duration::from_millis(150)).await;
    w.reply(&task2, json!({}), b"late").await;
    let (task3, _) = w.task().await;
    w.reply(&task3, json!({}), b"ok").await;
    assert_eq!(next_packet(&mut ws).await, Packet::Rec(PacketReply { id: 4, payload: "ok".into() }));
    assert_eq!(gw.metric("rainbow_worker_replies_total{outcome=\"late\"}").await, 1.0);
}

async fn close_of(w: &mut RawWorker) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, w.ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn protocol_errors_close_the_worker_and_its_tasks_go_to_the_next_one() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY, ("worker_events", "message")]).await;
    let mut v2 = RawWorker::open(&gw).await;
    v2.send(json!({"op": "hello", "version": 2, "credits": 1}), b"").await;
    let (code, reason) = close_of(&mut v2).await;
    assert!(code == 1002 && reason.contains("version 1"), "{code} {reason}");

    let mut early = RawWorker::open(&gw).await;
    early.send(json!({"op": "reply", "task": 1}), b"").await;
    assert_eq!(close_of(&mut early).await.0, 1002);

    let mut first = RawWorker::attach(&gw, 1).await;
    let mut ws = raw_connect(&gw).await;
    send_packet(
        &mut ws,
        Packet::Send(SendPacket { message_type: 1, qos: Qos::ExactlyOnce, id: 1, dup: false, payload: "x".into() }),
    )
    .await;
    let (held, _) = first.task().await;
    first.send(json!({"op": "juggle"}), b"").await;
    let (code, reason) = close_of(&mut first).await;
    assert!(code == 1002 && reason.contains("unknown op"), "{code} {reason}");

    let mut second = RawWorker::attach(&gw, 1).await;
    let (again, body) = second.task().await;
    assert_eq!((&again["key"], &again["task"], again["attempt"].as_u64()), (&held["key"], &held["task"], Some(2)));
    assert_eq!(&body[..], b"x");
    second.reply(&again, json!({}), b"done").await;
    assert_eq!(next_packet(&mut ws).await, Packet::Rec(PacketReply { id: 1, payload: "done".into() }));
    assert_eq!(gw.metric("rainbow_worker_tasks_requeued_total").await, 1.0);
    assert_eq!(gw.metric("rainbow_worker_disconnects_total{reason=\"protocol_error\"}").await, 3.0);

    let mut text = RawWorker::attach(&gw, 1).await;
    futures_util::SinkExt::send(&mut text.ws, WsMessage::Text("hello".into())).await.unwrap();
    assert_eq!(close_of(&mut text).await.0, 1002);
}

#[tokio::test]
async fn a_draining_library_worker_finishes_its_tasks_and_nothing_is_requeued() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY]).await;
    let counts: Arc<[AtomicUsize; 2]> = Arc::default();
    let make = |n: usize| {
        let counts = counts.clone();
        Worker::new(worker_config(&gw, &format!("w{n}")).credits(2)).on_any_message(move |task, _| {
            let counts = counts.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                counts[n].fetch_add(1, Ordering::SeqCst);
                Reply::new(task.payload)
            }
        })
    };
    let (a, b) = (make(0), make(1));
    let drain_a = a.handle();
    let running_a = tokio::spawn(a.run());
    let running_b = tokio::spawn(b.run());
    wait_workers(&gw, 2).await;
    let mut sends = Vec::new();
    for c in 0..4 {
        let config = client_config(&gw);
        sends.push(tokio::spawn(async move {
            let (client, _events) = rainbow_client::Client::connect(config).await.unwrap();
            for i in 0..15u32 {
                let qos = if i.is_multiple_of(2) { Qos::AtLeastOnce } else { Qos::ExactlyOnce };
                let payload = format!("{c}-{i}");
                assert_eq!(client.send(1, payload.clone(), qos).await.unwrap(), payload.as_bytes());
            }
            client.close().await;
        }));
    }
    wait_for("worker A at work", || counts[0].load(Ordering::SeqCst) >= 4).await;
    drain_a.drain();
    tokio::time::timeout(WAIT, running_a).await.expect("drain finished").unwrap().unwrap();
    let handled_a = counts[0].load(Ordering::SeqCst);
    for s in sends {
        s.await.unwrap();
    }
    assert_eq!(counts[0].load(Ordering::SeqCst), handled_a, "no task after the drain");
    assert_eq!(handled_a + counts[1].load(Ordering::SeqCst), 60);
    assert_eq!(gw.metric("rainbow_worker_tasks_requeued_total").await, 0.0);
    assert_eq!(gw.metric("rainbow_worker_disconnects_total{reason=\"drained\"}").await, 1.0);
    running_b.abort();
}

#[tokio::test]
async fn routing_by_type_and_auto_fallback_to_the_webhook() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("worker_types", "7, 10-12")]).await;
    // auto, no worker: the webhook.
    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    assert_eq!(&client.send(7, "a", Qos::AtLeastOnce).await.unwrap()[..], b"echo:a");
    let running = tokio::spawn(
        Worker::new(worker_config(&gw, "typed"))
            .on_any_message(|task, _| async move {
                Reply::new(format!("worker:{}", String::from_utf8_lossy(&task.payload)))
            })
            .run(),
    );
    wait_workers(&gw, 1).await;
    assert_eq!(&client.send(7, "b", Qos::AtLeastOnce).await.unwrap()[..], b"worker:b");
    assert_eq!(&client.send(11, "c", Qos::ExactlyOnce).await.unwrap()[..], b"worker:c");
    assert_eq!(&client.send(8, "d", Qos::AtLeastOnce).await.unwrap()[..], b"echo:d", "type 8 is not routed");
    assert_eq!(backend.calls("forward").len(), 2);
    // New connections now go through the worker (its default accepts).
    let (other, _events2) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    assert_eq!(backend.calls("connect").len(), 1);
    other.close().await;
    running.abort();
    wait_workers(&gw, 0).await;
    assert_eq!(&client.send(7, "e", Qos::AtLeastOnce).await.unwrap()[..], b"echo:e", "back to the webhook");

    let gw = TestGateway::start(&backend, &[("worker_route", "webhook")]).await;
    let running = tokio::spawn(Worker::new(worker_config(&gw, "idle")).run());
    wait_workers(&gw, 1).await;
    let (client, _events) = rainbow_client::Client::connect(client_config(&gw)).await.unwrap();
    assert_eq!(&client.send(7, "f", Qos::AtLeastOnce).await.unwrap()[..], b"echo:f");
    assert_eq!(gw.metric("rainbow_worker_tasks_dispatched_total").await, 0.0);
    running.abort();
}

#[tokio::test]
async fn serverinfo_lists_workers_without_secrets() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[]).await;
    let mut w = RawWorker::open(&gw).await;
    w.send(json!({"op": "hello", "version": 1, "credits": 3}), b"").await;
    wait_workers(&gw, 1).await;
    let info: Value = reqwest::get(gw.http("/serverinfo/?cluster=1")).await.unwrap().json().await.unwrap();
    let workers = &info["nodes"][0]["workers"];
    assert_eq!(workers[0]["name"], "raw");
    assert_eq!((workers[0]["credits"].as_u64(), workers[0]["in_flight"].as_u64()), (Some(3), Some(0)));
    let html = reqwest::get(gw.http("/serverinfo/")).await.unwrap().text().await.unwrap();
    assert!(html.contains("<td>raw</td>") && !html.contains(TOKEN));
    assert_eq!(gw.metric("rainbow_workers ").await, 1.0);
    w.send(json!({"op": "drain"}), b"").await;
    assert_eq!(w.next().await.0, json!({"op": "drained"}));
    let info: Value = reqwest::get(gw.http("/serverinfo/?cluster=1")).await.unwrap().json().await.unwrap();
    assert_eq!(info["nodes"][0]["workers"][0]["draining"], true);
}

#[tokio::test]
async fn a_library_worker_reconnects_and_its_dedup_answers_redeliveries() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY, ("worker_events", "message")]).await;
    let proxy = Proxy::start(gw.addr).await;
    let runs: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let runs2 = runs.clone();
    let config = rainbow_worker::WorkerConfig::new(format!("ws://{}/worker/", proxy.addr), TOKEN)
        .name("flaky")
        .credits(4)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let worker = Worker::new(config).dedup(rainbow_worker::MemoryDedup::new(1000)).on_any_message(move |task, _| {
        let runs = runs2.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            *runs.lock().unwrap().entry(String::from_utf8_lossy(&task.payload).into_owned()).or_default() += 1;
            Reply::new(task.payload)
        }
    });
    let running = tokio::spawn(worker.run());
    wait_workers(&gw, 1).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut sends = Vec::new();
    for c in 0..3 {
        let config = client_config(&gw).retransmit_interval(Duration::from_millis(500));
        let answered = answered.clone();
        sends.push(tokio::spawn(async move {
            let (client, _events) = rainbow_client::Client::connect(config).await.unwrap();
            for i in 0..12u32 {
                let payload = format!("{c}-{i}");
                assert_eq!(client.send(1, payload.clone(), Qos::ExactlyOnce).await.unwrap(), payload.as_bytes());
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    wait_for("messages flowing", || answered.load(Ordering::SeqCst) >= 6).await;
    proxy.cut();
    for s in sends {
        tokio::time::timeout(Duration::from_secs(30), s).await.unwrap().unwrap();
    }
    assert_eq!(gw.metric("rainbow_worker_disconnects_total{reason=\"lost\"}").await, 1.0);
    assert!(gw.metric("rainbow_worker_tasks_requeued_total").await >= 1.0, "the cut hit tasks in flight");
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 36);
    assert!(runs.values().all(|n| *n == 1), "a redelivered task ran its handler again: {runs:?}");
    assert_eq!(gw.gw.backend.workers().attached(), 1, "the worker came back by itself");
    running.abort();
}

/// Review bug 6: a context a worker answers that no header can carry (a
/// control character) is the worker's answer error, said and counted as
/// such, and refused at once; it was taken, and every later webhook call of
/// the connection then failed as an "unreachable backend".
#[tokio::test]
async fn a_context_no_header_can_carry_is_a_backend_answer_error() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[WORKERS_ONLY, ("worker_events", "message"), ("worker_types", "7")]).await;
    let mut w = RawWorker::attach(&gw, 1).await;
    let mut ws = raw_connect(&gw).await;
    let send = SendPacket { message_type: 7, qos: Qos::AtLeastOnce, id: 1, dup: false, payload: "p".into() };
    send_packet(&mut ws, Packet::Send(send)).await;
    let (task, _) = w.task().await;
    w.reply(&task, json!({"context": "line1\nline2"}), b"r").await;
    assert_silent(&mut ws, Duration::from_millis(200)).await;
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"bad_answer\"}").await, 1.0);
    // The connection keeps its (empty) context: its webhook calls work.
    let send = SendPacket { message_type: 1, qos: Qos::AtLeastOnce, id: 2, dup: false, payload: "q".into() };
    send_packet(&mut ws, Packet::Send(send)).await;
    assert_eq!(next_packet(&mut ws).await, Packet::Ack(PacketReply { id: 2, payload: "echo:q".into() }));
    assert_eq!(backend.calls("forward")[0].header("rainbowclientcookie"), None);
    assert_eq!(gw.metric("rainbow_forwards_total{outcome=\"unreachable\"}").await, 0.0);
}
