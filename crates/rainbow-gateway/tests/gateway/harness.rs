//! Test harness: a real HTTP backend on loopback that records every hook call
//! and answers from a script, a gateway started in-process on a free port,
//! signed API calls, and raw WebSocket clients for packet-level checks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use rainbow_gateway::signature::sign;
use rainbow_gateway::{Config, Gateway, Server, Settings};
use rainbow_protocol::Packet;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TOKEN: &str = "qwe123";
pub const WAIT: Duration = Duration::from_secs(5);

/// One hook call the backend received.
#[derive(Debug, Clone)]
pub struct Call {
    pub hook: &'static str,
    pub message_type: Option<u16>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    pub fn identity(&self) -> String {
        self.header("RAINBOWCLIENTIDENTITY").unwrap_or_default()
    }

    /// Whether the gateway signed this call correctly with [`TOKEN`].
    pub fn signed_ok(&self) -> bool {
        match (self.param("timestamp"), self.param("nonce"), self.param("signature")) {
            (Some(t), Some(n), Some(s)) => rainbow_gateway::signature::signature(TOKEN, &t, &n) == s,
            _ => false,
        }
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply { status: 200, body: body.to_string(), headers: Vec::new(), delay: Duration::ZERO }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type ForwardScript = Arc<dyn Fn(&Call) -> Reply + Send + Sync>;

struct BackendState {
    calls: Mutex<Vec<Call>>,
    changed: Notify,
    connect: Mutex<Reply>,
    forward: Mutex<ForwardScript>,
}

/// The recording backend.
#[derive(Clone)]
pub struct Backend {
    pub url: String,
    state: Arc<BackendState>,
}

async fn record(state: &BackendState, hook: &'static str, message_type: Option<u16>, request: Request) -> Call {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let call = Call { hook, message_type, query, headers: parts.headers, body };
    state.calls.lock().unwrap().push(call.clone());
    state.changed.notify_waiters();
    call
}

async fn respond(reply: Reply) -> Response {
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        // From bytes: a backend may send any header value HTTP allows,
        // including non-ASCII (obs-text) bytes.
        response
            .headers_mut()
            .append(HeaderName::from_static(name), HeaderValue::from_bytes(value.as_bytes()).unwrap());
    }
    response
}

async fn on_connect(State(state): State<Arc<BackendState>>, request: Request) -> Response {
    record(&state, "connect", None, request).await;
    let reply = state.connect.lock().unwrap().clone();
    respond(reply).await
}

async fn on_message(State(state): State<Arc<BackendState>>, Path(t): Path<u16>, request: Request) -> Response {
    let call = record(&state, "forward", Some(t), request).await;
    let script = state.forward.lock().unwrap().clone();
    respond(script(&call)).await
}

async fn on_close(State(state): State<Arc<BackendState>>, request: Request) -> Response {
    record(&state, "close", None, request).await;
    respond(Reply::ok("{}")).await
}

impl Backend {
    /// Starts a backend that accepts every connection and echoes forwards.
    pub async fn start() -> Backend {
        let state = Arc::new(BackendState {
            calls: Mutex::new(Vec::new()),
            changed: Notify::new(),
            connect: Mutex::new(Reply::ok(r#"{"status": "success"}"#)),
            forward: Mutex::new(Arc::new(|call: &Call| {
                Reply::ok(&format!("echo:{}", String::from_utf8_lossy(&call.body)))
            })),
        });
        let app = Router::new()
            .route("/rainbow/connect/", get(on_connect))
            .route("/rainbow/message/{t}/", post(on_message))
            .route("/rainbow/close/", get(on_close))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Backend { url: format!("http://{addr}/rainbow"), state }
    }

    pub fn on_connect(&self, reply: Reply) {
        *self.state.connect.lock().unwrap() = reply;
    }

    pub fn on_forward(&self, script: impl Fn(&Call) -> Reply + Send + Sync + 'static) {
        *self.state.forward.lock().unwrap() = Arc::new(script);
    }

    pub fn calls(&self, hook: &str) -> Vec<Call> {
        self.state.calls.lock().unwrap().iter().filter(|c| c.hook == hook).cloned().collect()
    }

    /// Waits until at least `n` calls of `hook` arrived, and returns them.
    pub async fn wait_calls(&self, hook: &str, n: usize) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.state.changed.notified();
            let calls = self.calls(hook);
            if calls.len() >= n {
                return calls;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("backend got {} {hook} calls, expected {n}", self.calls(hook).len());
            }
        }
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), rainbow_gateway::ServerError>>,
}

pub fn settings(backend: &Backend, extra: &[(&str, &str)]) -> Settings {
    let connect = format!("{}/connect/", backend.url);
    let close = format!("{}/close/", backend.url);
    let forward = format!("{}/message/{{message_type}}/", backend.url);
    let mut pairs = vec![
        ("security_token", TOKEN),
        ("connect_url", connect.as_str()),
        ("close_url", close.as_str()),
        ("forward_url", forward.as_str()),
        ("bind", "127.0.0.1"),
        ("http_port", "0"),
    ];
    pairs.extend_from_slice(extra);
    Settings::from_pairs(pairs)
}

impl TestGateway {
    pub async fn start(backend: &Backend, extra: &[(&str, &str)]) -> TestGateway {
        TestGateway::start_with(backend, extra, None).await
    }

    /// A gateway whose `/updateconfig/` re-reads `reload()`'s settings.
    pub async fn start_reloadable(
        backend: &Backend,
        extra: &[(&str, &str)],
        reload: impl Fn() -> Settings + Send + Sync + 'static,
    ) -> TestGateway {
        let reloader: rainbow_gateway::state::Reloader = Box::new(move || Config::from_settings(&reload()));
        TestGateway::start_with(backend, extra, Some(reloader)).await
    }

    async fn start_with(
        backend: &Backend,
        extra: &[(&str, &str)],
        reloader: Option<rainbow_gateway::state::Reloader>,
    ) -> TestGateway {
        let config = Config::from_settings(&settings(backend, extra)).unwrap();
        let server = Server::bind(config, reloader).await.unwrap();
        let addr = server.local_addr();
        let gw = server.gateway();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestGateway { addr, gw, stop: Some(stop), handle }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connect/", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A signed API call; returns the HTTP status and the JSON answer.
    pub async fn api(&self, path: &str, query: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, Value) {
        api_at(&self.http(""), path, query, body).await
    }

    /// An API call with exactly these query pairs.
    pub async fn raw_api(
        &self,
        path: &str,
        pairs: &[(String, String)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        raw_api_at(&self.http(""), path, pairs, body).await
    }

    /// A metric's value (sum over series whose line contains `pattern`).
    pub async fn metric(&self, pattern: &str) -> f64 {
        let text = reqwest::get(self.http("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(pattern))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the gateway holds `n` connections.
    pub async fn wait_connections(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.gw.hub.len() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway holds {} connections, expected {n}",
                self.gw.hub.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.handle).await.unwrap().unwrap().unwrap();
    }
}

/// A signed API call to the gateway at `base` (`http://host:port`).
pub async fn api_at(base: &str, path: &str, query: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, Value) {
    let signed = sign(TOKEN);
    let mut pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    pairs.extend(signed.pairs().into_iter().map(|(k, v)| (k.to_string(), v)));
    raw_api_at(base, path, &pairs, body).await
}

/// An API call with exactly these query pairs to the gateway at `base`.
pub async fn raw_api_at(
    base: &str,
    path: &str,
    pairs: &[(String, String)],
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let response = reqwest::Client::new()
        .post(format!("{base}{path}?{query}"))
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client with device headers, for packet-level tests.
pub async fn raw_connect(gw: &TestGateway) -> RawWs {
    let mut request = gw.ws_url().into_client_request().unwrap();
    request.headers_mut().insert("X-DEVICEID", HeaderValue::from_static("raw-device"));
    request.headers_mut().insert("X-CLIENT-OS", HeaderValue::from_static("test"));
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws
}

/// The HTTP status a handshake is refused with.
pub async fn refused_status(url: &str, headers: &[(&'static str, &'static str)]) -> u16 {
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, HeaderValue::from_static(v));
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("handshake was accepted"),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

pub async fn send_packet(ws: &mut RawWs, packet: Packet) {
    ws.send(Message::Binary(packet.encode())).await.unwrap();
}

/// The next packet from the gateway (pings skipped).
pub async fn next_packet(ws: &mut RawWs) -> Packet {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no packet from the gateway") {
            Some(Ok(Message::Binary(b))) => return Packet::decode(b).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

/// Reads until the gateway's close frame, returning its code and reason.
pub async fn close_frame(ws: &mut RawWs) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no close frame") {
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => return (code.into(), reason.to_string()),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a close frame"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
        }
    }
}

/// Asserts nothing arrives for `quiet`.
pub async fn assert_silent(ws: &mut RawWs, quiet: Duration) {
    if let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, ws.next()).await
        && !matches!(m, Message::Ping(_) | Message::Pong(_))
    {
        panic!("expected silence, got {m:?}");
    }
}

pub fn client_config(gw: &TestGateway) -> rainbow_client::ClientConfig {
    rainbow_client::ClientConfig::new(gw.ws_url()).device_id("device-1").os("test")
}
