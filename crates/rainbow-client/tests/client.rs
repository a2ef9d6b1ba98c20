//! End-to-end tests of the client against a scripted gateway: a real
//! WebSocket server on 127.0.0.1 (tokio-tungstenite) that plays the gateway's
//! side packet by packet. Every wait is bounded by [`WAIT`]; nothing sleeps
//! blindly.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rainbow_client::{Client, ClientConfig, ClientError, DeviceIn, Event, Qos, ReconnectPolicy, ServerMessage};
use rainbow_protocol::{Packet, Reply, SendPacket};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The longest any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);

type ServerWs = WebSocketStream<TcpStream>;

/// What the client sent in its handshake.
#[derive(Debug)]
struct Handshake {
    uri: Uri,
    headers: HeaderMap,
}

/// The fake gateway's listening socket.
struct Gateway {
    listener: TcpListener,
    url: String,
}

impl Gateway {
    async fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/connect/", listener.local_addr().unwrap());
        Gateway { listener, url }
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::new(self.url.clone())
            .device_id("dev-1")
            .os("test-os")
            .retransmit_interval(Duration::from_millis(100))
            .request_timeout(Duration::from_secs(3))
    }

    /// Accepts one WebSocket connection and records its handshake.
    async fn accept(&self) -> (ServerWs, Handshake) {
        let (tcp, _) = within(self.listener.accept()).await.unwrap();
        let mut seen = None;
        // tungstenite's handshake `Callback` fixes this closure's error type.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, response: Response| {
            seen = Some(Handshake { uri: request.uri().clone(), headers: request.headers().clone() });
            Ok(response)
        };
        let ws = within(tokio_tungstenite::accept_hdr_async(tcp, callback)).await.unwrap();
        (ws, seen.unwrap())
    }

    /// Accepts one handshake and refuses it with `status` and `body`.
    async fn refuse(&self, status: u16, body: &str) {
        let (tcp, _) = within(self.listener.accept()).await.unwrap();
        #[allow(clippy::result_large_err)] // The error type is tungstenite's.
        let callback = |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
            let mut refusal = ErrorResponse::new(Some(body.to_owned()));
            *refusal.status_mut() = StatusCode::from_u16(status).unwrap();
            Err(refusal)
        };
        assert!(within(tokio_tungstenite::accept_hdr_async(tcp, callback)).await.is_err());
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out waiting")
}

/// The next packet from the client (pings and pongs skipped).
async fn recv(ws: &mut ServerWs) -> Packet {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Binary(bytes))) => return Packet::decode(bytes).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

async fn recv_send(ws: &mut ServerWs) -> SendPacket {
    match recv(ws).await {
        Packet::Send(send) => send,
        other => panic!("expected a SEND, got {other:?}"),
    }
}

async fn write(ws: &mut ServerWs, packet: Packet) {
    ws.send(Message::Binary(packet.encode())).await.unwrap();
}

/// Reads until the client's close frame and returns it.
async fn recv_close(ws: &mut ServerWs) -> Option<CloseFrame> {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Keeps reading (answering the close handshake) until the client goes away.
async fn until_gone(mut ws: ServerWs) {
    while let Some(Ok(_)) = within(ws.next()).await {}
}

fn server_send(message_type: u16, qos: Qos, id: u16, dup: bool, payload: &'static str) -> Packet {
    Packet::Send(SendPacket { message_type, qos, id, dup, payload: Bytes::from_static(payload.as_bytes()) })
}

fn ack(id: u16, payload: &'static str) -> Packet {
    Packet::Ack(Reply { id, payload: Bytes::from_static(payload.as_bytes()) })
}

fn rec(id: u16, payload: &'static str) -> Packet {
    Packet::Rec(Reply { id, payload: Bytes::from_static(payload.as_bytes()) })
}

async fn next_event(events: &mut rainbow_client::Events) -> Option<Event> {
    within(events.next()).await
}

async fn next_message(events: &mut rainbow_client::Events) -> ServerMessage {
    match next_event(events).await {
        Some(Event::Message(msg)) => msg,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn spawn<F: Future<Output = ()> + std::marker::Send + 'static>(script: F) -> JoinHandle<()> {
    tokio::spawn(script)
}

#[tokio::test]
async fn device_parameters_travel_as_headers() {
    let gw = Gateway::start().await;
    let config = gw.config().query("app", "demo").header("X-Extra", "yes");
    let (connected, (ws, handshake)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, _events) = connected.unwrap();
    assert_eq!(handshake.headers["x-deviceid"], "dev-1");
    assert_eq!(handshake.headers["x-client-os"], "test-os");
    assert_eq!(handshake.headers["x-extra"], "yes");
    assert_eq!(handshake.uri.path(), "/connect/");
    assert_eq!(handshake.uri.query(), Some("app=demo"));
    let server = spawn(until_gone(ws));
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn device_parameters_travel_in_the_query() {
    let gw = Gateway::start().await;
    let config =
        ClientConfig::new(format!("{}?app=demo", gw.url)).device_id("dev 2").os("web").device_in(DeviceIn::Query);
    let (connected, (ws, handshake)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, _events) = connected.unwrap();
    assert_eq!(handshake.uri.query(), Some("app=demo&X-DEVICEID=dev%202&X-CLIENT-OS=web"));
    assert!(!handshake.headers.contains_key("x-deviceid"));
    assert!(!handshake.headers.contains_key("x-client-os"));
    drop(ws);
    drop(client);
}

#[tokio::test]
async fn qos_0_1_2_sends_return_the_reply_payload() {
    let gw = Gateway::start().await;
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(gw.config()), gw.accept());
    let (client, _events) = connected.unwrap();
    let server = spawn(async move {
        let s = recv_send(&mut ws).await;
        assert_eq!((s.message_type, s.qos, s.id, s.dup, &s.payload[..]), (10, Qos::AtMostOnce, 0, false, &b"zero"[..]));

        let s = recv_send(&mut ws).await;
        assert_eq!((s.message_type, s.qos, s.dup, &s.payload[..]), (11, Qos::AtLeastOnce, false, &b"one"[..]));
        write(&mut ws, ack(s.id, "reply-1")).await;

        let s = recv_send(&mut ws).await;
        assert_eq!((s.message_type, s.qos, &s.payload[..]), (12, Qos::ExactlyOnce, &b"two"[..]));
        write(&mut ws, rec(s.id, "reply-2")).await;
        assert_eq!(recv(&mut ws).await, Packet::Rel(s.id));
        write(&mut ws, Packet::Com(s.id)).await;
        until_gone(ws).await;
    });
    assert_eq!(client.send(10, "zero", Qos::AtMostOnce).await.unwrap(), "");
    assert_eq!(client.send(11, "one", Qos::AtLeastOnce).await.unwrap(), "reply-1");
    assert_eq!(client.send(12, "two", Qos::ExactlyOnce).await.unwrap(), "reply-2");
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn unanswered_sends_are_retransmitted_with_dup_then_time_out() {
    let gw = Gateway::start().await;
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(gw.config()), gw.accept());
    let (client, _events) = connected.unwrap();
    let server = spawn(async move {
        let first = recv_send(&mut ws).await;
        assert!(!first.dup);
        let again = recv_send(&mut ws).await;
        assert!(again.dup, "a retransmission carries dup = 1");
        assert_eq!((again.id, &again.payload[..]), (first.id, &b"hello"[..]));
        write(&mut ws, ack(first.id, "finally")).await;

        // This one is never answered: the client must give up.
        let ignored = recv_send(&mut ws).await;
        assert_ne!(ignored.id, first.id);
        until_gone(ws).await;
    });
    assert_eq!(client.send(1, "hello", Qos::AtLeastOnce).await.unwrap(), "finally");
    let timeout = Duration::from_millis(300);
    let result = client.send_with_timeout(1, "nobody answers", Qos::ExactlyOnce, timeout).await;
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn gateway_messages_are_answered_with_the_handler_reply_and_deduplicated() {
    let gw = Gateway::start().await;
    let config =
        gw.config().handler(|msg| Some(format!("re:{}", String::from_utf8_lossy(&msg.payload)).into_bytes().into()));
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, mut events) = connected.unwrap();
    let server = spawn(async move {
        write(&mut ws, server_send(5, Qos::AtLeastOnce, 1, false, "a")).await;
        assert_eq!(recv(&mut ws).await, ack(1, "re:a"));

        write(&mut ws, server_send(6, Qos::ExactlyOnce, 2, false, "b")).await;
        assert_eq!(recv(&mut ws).await, rec(2, "re:b"));
        // The REC "got lost": the gateway retransmits before REL. The client
        // answers with the same REC but does not deliver the message again.
        write(&mut ws, server_send(6, Qos::ExactlyOnce, 2, true, "b")).await;
        assert_eq!(recv(&mut ws).await, rec(2, "re:b"));
        write(&mut ws, Packet::Rel(2)).await;
        assert_eq!(recv(&mut ws).await, Packet::Com(2));

        write(&mut ws, server_send(7, Qos::AtMostOnce, 0, false, "c")).await;
        until_gone(ws).await;
    });
    let msg = next_message(&mut events).await;
    assert_eq!((msg.message_type, msg.qos, msg.dup, &msg.payload[..]), (5, Qos::AtLeastOnce, false, &b"a"[..]));
    let msg = next_message(&mut events).await;
    assert_eq!((msg.message_type, msg.qos, &msg.payload[..]), (6, Qos::ExactlyOnce, &b"b"[..]));
    // The next event is the qos-0 marker, not the duplicate.
    let msg = next_message(&mut events).await;
    assert_eq!((msg.message_type, msg.qos, &msg.payload[..]), (7, Qos::AtMostOnce, &b"c"[..]));
    client.close().await;
    within(server).await.unwrap();
    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: Some(1000), .. })));
    assert_eq!(next_event(&mut events).await, None);
}

#[tokio::test]
async fn a_full_event_queue_leaves_messages_unanswered_until_drained() {
    let gw = Gateway::start().await;
    let config = gw.config().event_capacity(1);
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, mut events) = connected.unwrap();
    write(&mut ws, server_send(1, Qos::AtLeastOnce, 1, false, "first")).await;
    assert_eq!(recv(&mut ws).await, ack(1, ""));
    write(&mut ws, server_send(1, Qos::AtLeastOnce, 2, false, "second")).await;
    // Packets are handled in order: had the client answered id 2, that ACK
    // would arrive before the COM for this REL.
    write(&mut ws, Packet::Rel(99)).await;
    assert_eq!(recv(&mut ws).await, Packet::Com(99));
    assert_eq!(events.refused_messages(), 1);

    assert_eq!(next_message(&mut events).await.payload, "first");
    write(&mut ws, server_send(1, Qos::AtLeastOnce, 2, true, "second")).await;
    assert_eq!(recv(&mut ws).await, ack(2, ""));
    let msg = next_message(&mut events).await;
    assert_eq!((msg.dup, &msg.payload[..]), (true, &b"second"[..]));
    let server = spawn(until_gone(ws));
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_401_handshake_is_a_refusal() {
    let gw = Gateway::start().await;
    let (connected, ()) = tokio::join!(Client::connect(gw.config()), gw.refuse(401, "connect hook said no"));
    match connected {
        Err(ClientError::Refused { status, body }) => {
            assert_eq!(status, 401);
            assert_eq!(body, "connect hook said no");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_gateway_is_a_connect_error() {
    let gw = Gateway::start().await;
    let config = gw.config();
    drop(gw);
    let result = Client::connect(config).await;
    assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
}

#[tokio::test]
async fn the_closed_event_carries_the_gateway_close_code_and_reason() {
    let gw = Gateway::start().await;
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(gw.config()), gw.accept());
    let (client, mut events) = connected.unwrap();
    let server = spawn(async move {
        let frame = CloseFrame { code: CloseCode::from(4001), reason: "kicked".into() };
        ws.close(Some(frame)).await.unwrap();
        until_gone(ws).await;
    });
    assert_eq!(next_event(&mut events).await, Some(Event::Closed { code: Some(4001), reason: "kicked".into() }));
    assert_eq!(next_event(&mut events).await, None);
    within(server).await.unwrap();
    match client.send(1, "late", Qos::AtLeastOnce).await {
        Err(ClientError::Closed { code: Some(4001), reason }) => assert_eq!(reason, "kicked"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(client.is_closed());
}

#[tokio::test]
async fn garbage_from_the_gateway_closes_with_1002() {
    let gw = Gateway::start().await;
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(gw.config()), gw.accept());
    let (client, mut events) = connected.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(1, "x", Qos::AtLeastOnce).await })
    };
    recv_send(&mut ws).await;
    ws.send(Message::Binary(Bytes::from_static(b"\x60\x00\x01"))).await.unwrap();
    let frame = recv_close(&mut ws).await.unwrap();
    assert_eq!(u16::from(frame.code), 1002);
    let server = spawn(until_gone(ws));
    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: Some(1002), .. })));
    let result = within(pending).await.unwrap();
    assert!(matches!(result, Err(ClientError::Protocol(_))), "{result:?}");
    within(server).await.unwrap();
}

#[tokio::test]
async fn close_sends_1000_and_fails_pending_sends() {
    let gw = Gateway::start().await;
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(gw.config()), gw.accept());
    let (client, mut events) = connected.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(1, "x", Qos::AtLeastOnce).await })
    };
    recv_send(&mut ws).await;
    let server = spawn(async move {
        let frame = recv_close(&mut ws).await.unwrap();
        assert_eq!(frame.code, CloseCode::Normal);
        until_gone(ws).await;
    });
    within(client.close()).await;
    assert!(client.is_closed());
    let result = within(pending).await.unwrap();
    assert!(matches!(result, Err(ClientError::Closed { code: Some(1000), .. })), "{result:?}");
    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: Some(1000), .. })));
    assert_eq!(next_event(&mut events).await, None);
    within(server).await.unwrap();
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_attempts: Some(5),
    }
}

#[tokio::test]
async fn reconnects_after_a_drop_and_retransmits_the_unanswered_send() {
    let gw = Gateway::start().await;
    let config = gw.config().reconnect(fast_reconnect()).retransmit_interval(Duration::from_secs(60));
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, mut events) = connected.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(3, "survive", Qos::AtLeastOnce).await })
    };
    let lost = recv_send(&mut ws).await;
    assert!(!lost.dup);
    drop(ws); // TCP drop, no close frame, no ACK.

    let (mut ws, handshake) = gw.accept().await;
    assert_eq!(handshake.headers["x-deviceid"], "dev-1");
    let again = recv_send(&mut ws).await;
    assert!(again.dup, "the retransmission on the new connection carries dup = 1");
    assert_eq!((again.message_type, &again.payload[..]), (3, &b"survive"[..]));
    write(&mut ws, ack(again.id, "made it")).await;
    assert_eq!(within(pending).await.unwrap().unwrap(), "made it");

    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: None, .. })));
    assert_eq!(next_event(&mut events).await, Some(Event::Reconnected));
    // The new connection works both ways.
    write(&mut ws, server_send(4, Qos::AtLeastOnce, 1, false, "hi")).await;
    assert_eq!(recv(&mut ws).await, ack(1, ""));
    assert_eq!(next_message(&mut events).await.payload, "hi");
    let server = spawn(until_gone(ws));
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_401_while_reconnecting_is_not_retried() {
    let gw = Gateway::start().await;
    let config = gw.config().reconnect(fast_reconnect());
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, mut events) = connected.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(3, "x", Qos::AtLeastOnce).await })
    };
    recv_send(&mut ws).await;
    drop(ws);
    gw.refuse(401, "no").await;
    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: None, .. })));
    assert_eq!(next_event(&mut events).await, None, "no second attempt after a 401");
    let result = within(pending).await.unwrap();
    assert!(matches!(result, Err(ClientError::Refused { status: 401, .. })), "{result:?}");
    assert!(matches!(client.send(1, "y", Qos::AtMostOnce).await, Err(ClientError::Refused { status: 401, .. })));
}

#[tokio::test]
async fn a_503_while_reconnecting_is_retried() {
    let gw = Gateway::start().await;
    let config = gw.config().reconnect(fast_reconnect());
    let (connected, (ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, mut events) = connected.unwrap();
    drop(ws);
    gw.refuse(503, "backend down").await;
    let (ws, _) = gw.accept().await;
    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: None, .. })));
    assert_eq!(next_event(&mut events).await, Some(Event::Reconnected));
    let server = spawn(until_gone(ws));
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn cli_send_prints_the_reply() {
    use clap::Parser;
    use rainbow_client::cli::{ClientArgs, run};

    let gw = Gateway::start().await;
    let args = ClientArgs::try_parse_from(["rainbow-client", &gw.url, "send", "9", "ping", "--qos", "2"]).unwrap();
    let server = async {
        let (mut ws, handshake) = gw.accept().await;
        assert_eq!(handshake.headers["x-client-os"], "rainbow-cli");
        let s = recv_send(&mut ws).await;
        assert_eq!((s.message_type, s.qos, &s.payload[..]), (9, Qos::ExactlyOnce, &b"ping"[..]));
        write(&mut ws, rec(s.id, "pong")).await;
        assert_eq!(recv(&mut ws).await, Packet::Rel(s.id));
        write(&mut ws, Packet::Com(s.id)).await;
        until_gone(ws).await;
    };
    let (result, ()) = tokio::join!(run(args), server);
    result.unwrap();

    let args = ClientArgs::try_parse_from(["rainbow-client", &gw.url, "send", "9", "ping"]).unwrap();
    let (result, ()) = tokio::join!(run(args), gw.refuse(503, "full"));
    assert!(matches!(result, Err(ClientError::Refused { status: 503, .. })), "{result:?}");
}

#[tokio::test]
async fn pings_are_answered_while_idle() {
    let gw = Gateway::start().await;
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(gw.config()), gw.accept());
    let (client, _events) = connected.unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"alive?"))).await.unwrap();
    match within(ws.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(payload, "alive?"),
        other => panic!("expected a pong, got {other:?}"),
    }
    let server = spawn(until_gone(ws));
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let gw = Gateway::start().await;
    let config = gw.config().max_message_size(64);
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (_client, mut events) = connected.unwrap();
    ws.send(Message::Binary(Bytes::from(vec![0x10; 100]))).await.unwrap();
    let frame = recv_close(&mut ws).await.unwrap();
    assert_eq!(u16::from(frame.code), 1009);
    let server = spawn(until_gone(ws));
    assert!(matches!(next_event(&mut events).await, Some(Event::Closed { code: Some(1009), .. })));
    within(server).await.unwrap();
}

#[tokio::test]
async fn in_flight_sends_are_bounded() {
    let gw = Gateway::start().await;
    let config = gw.config().max_in_flight(1);
    let (connected, (mut ws, _)) = tokio::join!(Client::connect(config), gw.accept());
    let (client, _events) = connected.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(1, "first", Qos::AtLeastOnce).await })
    };
    let first = recv_send(&mut ws).await;
    let second = client.send(1, "second", Qos::ExactlyOnce).await;
    assert!(matches!(second, Err(ClientError::InFlightFull(1))), "{second:?}");
    // qos 0 needs no slot.
    assert_eq!(client.send(1, "third", Qos::AtMostOnce).await.unwrap(), "");
    assert_eq!(recv_send(&mut ws).await.payload, "third");
    write(&mut ws, ack(first.id, "ok")).await;
    assert_eq!(within(pending).await.unwrap().unwrap(), "ok");
    let server = spawn(until_gone(ws));
    client.close().await;
    within(server).await.unwrap();
}

#[tokio::test]
async fn cli_listen_runs_until_the_gateway_closes_normally() {
    use clap::Parser;
    use rainbow_client::cli::{ClientArgs, run};

    let gw = Gateway::start().await;
    let args = ClientArgs::try_parse_from(["rainbow-client", &gw.url, "listen", "--device-in", "query"]).unwrap();
    let server = async {
        let (mut ws, handshake) = gw.accept().await;
        assert!(handshake.uri.query().unwrap_or_default().contains("X-CLIENT-OS=rainbow-cli"));
        write(&mut ws, server_send(2, Qos::AtLeastOnce, 1, false, "news")).await;
        assert_eq!(recv(&mut ws).await, ack(1, ""));
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
        until_gone(ws).await;
    };
    let (result, ()) = tokio::join!(run(args), server);
    result.unwrap();
}
