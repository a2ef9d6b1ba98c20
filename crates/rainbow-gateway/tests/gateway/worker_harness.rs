//! Worker test helpers: a raw worker speaking frames by hand (for
//! protocol-level checks), in-process workers from the `rainbow-worker`
//! library, and the `echo_worker` example as a real process to kill.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rainbow_gateway::signature::sign;
use rainbow_worker::WorkerConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

pub fn worker_url(gw: &TestGateway) -> String {
    format!("ws://{}/worker/", gw.addr)
}

/// A freshly signed handshake URL.
pub fn signed_worker_url(gw: &TestGateway, name: &str) -> String {
    let s = sign(TOKEN);
    format!("{}?timestamp={}&nonce={}&signature={}&name={name}", worker_url(gw), s.timestamp, s.nonce, s.signature)
}

/// A library worker's config for this gateway, reconnecting fast.
pub fn worker_config(gw: &TestGateway, name: &str) -> WorkerConfig {
    WorkerConfig::new(worker_url(gw), TOKEN)
        .name(name)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// Waits until `n` workers are attached.
pub async fn wait_workers(gw: &TestGateway, n: usize) {
    wait_for(&format!("{n} workers attached"), || gw.gw.backend.workers().attached() == n).await;
}

/// Polls `check` until it holds (10 s at most).
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn encode(header: &Value, body: &[u8]) -> Bytes {
    let json = serde_json::to_vec(header).unwrap();
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    Bytes::from(out)
}

pub fn decode(frame: &[u8]) -> (Value, Bytes) {
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    (serde_json::from_slice(&frame[4..4 + len]).unwrap(), Bytes::copy_from_slice(&frame[4 + len..]))
}

/// A worker written frame by frame.
pub struct RawWorker {
    pub ws: RawWs,
    pub welcome: Value,
}

impl RawWorker {
    /// Connects, reads `welcome`, does not say hello yet.
    pub async fn open(gw: &TestGateway) -> RawWorker {
        let (ws, _) = tokio_tungstenite::connect_async(signed_worker_url(gw, "raw")).await.unwrap();
        let mut w = RawWorker { ws, welcome: Value::Null };
        let (welcome, _) = w.next().await;
        assert_eq!(welcome["op"], "welcome");
        w.welcome = welcome;
        w
    }

    /// Connects and says hello with `credits`.
    pub async fn attach(gw: &TestGateway, credits: u32) -> RawWorker {
        let mut w = RawWorker::open(gw).await;
        w.send(json!({"op": "hello", "version": 1, "credits": credits}), b"").await;
        w
    }

    pub async fn send(&mut self, header: Value, body: &[u8]) {
        self.ws.send(Message::Binary(encode(&header, body))).await.unwrap();
    }

    /// The next frame (pings skipped).
    pub async fn next(&mut self) -> (Value, Bytes) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("no frame from the gateway") {
                Some(Ok(Message::Binary(b))) => return decode(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be a task.
    pub async fn task(&mut self) -> (Value, Bytes) {
        let (h, b) = self.next().await;
        assert_eq!(h["op"], "task", "{h}");
        (h, b)
    }

    /// Answers `task` with `extra` fields and `body`.
    pub async fn reply(&mut self, task: &Value, extra: Value, body: &[u8]) {
        let mut header = json!({"op": "reply", "task": task["task"]});
        if let (Some(h), Value::Object(extra)) = (header.as_object_mut(), extra) {
            h.extend(extra);
        }
        self.send(header, body).await;
    }

    /// Asserts no frame arrives for `quiet`.
    pub async fn silent(&mut self, quiet: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, self.ws.next()).await
            && !matches!(m, Message::Ping(_) | Message::Pong(_))
        {
            let shown = match &m {
                Message::Binary(b) => decode(b).0.to_string(),
                other => format!("{other:?}"),
            };
            panic!("expected no frame, got {shown}");
        }
    }
}

/// The `echo_worker` example binary, built once per test process.
pub fn echo_worker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The test binary is target/<profile>/deps/gateway-HASH.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", "rainbow-worker", "--example", "echo_worker"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "cannot build the echo_worker example");
        profile_dir.join("examples").join("echo_worker")
    })
    .clone()
}

/// An `echo_worker` process; killed with SIGKILL when dropped.
pub struct EchoProcess {
    pub child: Child,
}

impl EchoProcess {
    pub fn spawn(gw: &TestGateway, ledger: &Path, credits: u32, delay_ms: u64) -> EchoProcess {
        let child = Command::new(echo_worker_bin())
            .args(["--url", &worker_url(gw), "--token", TOKEN, "--name", "echo"])
            .args(["--credits", &credits.to_string(), "--delay-ms", &delay_ms.to_string()])
            .arg("--ledger")
            .arg(ledger)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        EchoProcess { child }
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client whose connection events are collected (to prove it never
/// dropped), retransmitting quickly.
pub struct WatchedClient {
    pub client: rainbow_client::Client,
    pub events: Arc<Mutex<Vec<rainbow_client::Event>>>,
}

impl WatchedClient {
    pub async fn connect(gw: &TestGateway, retransmit: Duration) -> WatchedClient {
        let config = client_config(gw).retransmit_interval(retransmit).request_timeout(Duration::from_secs(30));
        let (client, mut events) = rainbow_client::Client::connect(config).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                sink.lock().unwrap().push(e);
            }
        });
        WatchedClient { client, events: seen }
    }

    pub fn closed(&self) -> bool {
        self.client.is_closed()
            || self.events.lock().unwrap().iter().any(|e| matches!(e, rainbow_client::Event::Closed { .. }))
    }
}

/// A TCP proxy to the gateway whose connections can be cut (no close
/// frame, as when a network path dies).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(link.abort_handle());
            }
        });
        Proxy { addr, links, accept }
    }

    /// Drops every proxied connection.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
