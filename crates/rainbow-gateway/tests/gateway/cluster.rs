//! The cluster over Redis, end to end: a real `redis-server` on a free
//! loopback port, three `rainbow serve` processes sharing it, the recording
//! backend for their hooks, and real clients on every node.
//!
//! `redis-server` is installed by `scripts/install-deps.sh`; without it these
//! tests fail and say so.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use rainbow_client::{Client, ClientConfig, Event, Events};
use serde_json::{Value, json};

use crate::harness::*;

/// Heartbeat TTL of the test nodes: a killed node must vanish within it.
const TTL: Duration = Duration::from_secs(3);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` child on a free port, killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    async fn start() -> Redis {
        let mut redis = Redis { port: free_port(), child: None };
        redis.restart().await;
        redis
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/install-deps.sh (it installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `rainbow serve` process in the cluster, killed on drop.
struct Node {
    port: u16,
    child: Child,
}

impl Node {
    async fn start(redis: &Redis, cluster: &str, backend: &Backend) -> Node {
        let port = free_port();
        let sets = [
            format!("security_token={TOKEN}"),
            "bind=127.0.0.1".to_string(),
            format!("http_port={port}"),
            format!("connect_url={}/connect/", backend.url),
            format!("close_url={}/close/", backend.url),
            format!("forward_url={}/message/{{message_type}}/", backend.url),
            format!("redis_url={}", redis.url()),
            format!("cluster_name={cluster}"),
            format!("node_ttl={}s", TTL.as_secs()),
            "cluster_timeout=500ms".to_string(),
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_rainbow"));
        command.arg("serve");
        for set in &sets {
            command.args(["--set", set]);
        }
        let child = command.env("RUST_LOG", "warn").stdout(Stdio::null()).spawn().unwrap();
        let node = Node { port, child };
        let deadline = tokio::time::Instant::now() + WAIT;
        while node.metric("rainbow_cluster_up ").await != Some(1.0) {
            assert!(tokio::time::Instant::now() < deadline, "node on port {port} did not join the cluster");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn api(&self, path: &str, query: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Value {
        api_at(&self.base(), path, query, body).await.1
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base())).await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with(name))?.rsplit(' ').next()?.parse().ok()
    }

    async fn nodes(&self) -> Vec<Value> {
        let info: Value =
            reqwest::get(format!("{}/serverinfo/?cluster=1", self.base())).await.unwrap().json().await.unwrap();
        info["nodes"].as_array().cloned().unwrap_or_default()
    }

    /// A client on this node whose qos 1/2 answer is `reply`; returns its
    /// identity as the connect hook saw it.
    async fn client(&self, backend: &Backend, reply: &'static str) -> (Client, Events, String) {
        let before = backend.calls("connect").len();
        let config = ClientConfig::new(format!("ws://127.0.0.1:{}/connect/", self.port))
            .device_id("device")
            .os("test")
            .handler(move |_| Some(reply.into()));
        let (client, events) = Client::connect(config).await.unwrap();
        let identity = backend.wait_calls("connect", before + 1).await[before].identity();
        (client, events, identity)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cluster_name() -> String {
    format!("test-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() ^ std::process::id()
}

async fn three_nodes(redis: &Redis, backend: &Backend) -> Vec<Node> {
    let name = cluster_name();
    vec![
        Node::start(redis, &name, backend).await,
        Node::start(redis, &name, backend).await,
        Node::start(redis, &name, backend).await,
    ]
}

async fn next_payload(events: &mut Events) -> Vec<u8> {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await.expect("no message").expect("events ended") {
            Event::Message(m) => return m.payload.to_vec(),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn send_reaches_every_node_and_aggregates_at_every_qos() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok(r#"{"status":"success"}"#).header("rainbowclientchannel", "room"));
    let nodes = three_nodes(&redis, &backend).await;
    // One subscriber on the second and third node, none on the first.
    let (_b, mut events_b, _) = nodes[1].client(&backend, "").await;
    let (_c, mut events_c, _) = nodes[2].client(&backend, "from-c").await;

    let answer = nodes[0].api("/send/", &[("channel", "room"), ("qos", "0"), ("msgtype", "7")], "hello").await;
    assert_eq!(answer, json!({"status": 0}));
    assert_eq!(next_payload(&mut events_b).await, b"hello");
    assert_eq!(next_payload(&mut events_c).await, b"hello");

    for qos in ["1", "2"] {
        let answer = nodes[0].api("/send/", &[("channel", "room"), ("qos", qos), ("timeout", "5")], "q").await;
        assert_eq!(answer, json!({"status": 0, "connections": 2, "data": "from-c"}), "qos {qos}");
    }
    // A local subscriber too: the node that takes the call adds itself.
    let (_a, _events_a, _) = nodes[0].client(&backend, "").await;
    let answer = nodes[1].api("/send/", &[("channel", "room"), ("qos", "1"), ("timeout", "5")], "q").await;
    assert_eq!(answer["connections"], 3);
    assert_eq!(answer["data"], "from-c");
    // Nobody anywhere.
    let answer = nodes[2].api("/send/", &[("channel", "empty"), ("qos", "1")], "q").await;
    assert_eq!(answer, json!({"status": 0, "connections": 0, "data": ""}));
}

#[tokio::test]
async fn sub_unsub_and_occupy_reach_the_node_holding_the_connection() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let nodes = three_nodes(&redis, &backend).await;
    let (_a, _ea, a) = nodes[0].client(&backend, "a").await;
    let (_b, _eb, b) = nodes[1].client(&backend, "b").await;
    let (_c, mut events_c, c) = nodes[2].client(&backend, "c").await;
    let count = |answer: Value| answer["connections"].as_u64().unwrap_or(99);

    // Subscribed through nodes that do not hold them.
    let answer = nodes[2].api("/sub/", &[], json!({"identity": a, "channel": "x"}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    assert_eq!(nodes[0].api("/sub/", &[], json!({"identity": b, "channel": "x"}).to_string()).await["status"], 0);
    assert_eq!(count(nodes[1].api("/send/", &[("channel", "x"), ("qos", "1")], "m").await), 2);

    // Occupy from a third node: only c stays, on every node.
    let answer = nodes[0].api("/sub/", &[], json!({"identity": c, "channel": "x", "occupy": true}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    let answer = nodes[1].api("/send/", &[("channel", "x"), ("qos", "1")], "only-c").await;
    assert_eq!(answer, json!({"status": 0, "connections": 1, "data": "c"}));
    assert_eq!(next_payload(&mut events_c).await, b"only-c");

    // Unsubscribe through another node.
    assert_eq!(nodes[1].api("/unsub/", &[], json!({"identity": c, "channel": "x"}).to_string()).await["status"], 0);
    assert_eq!(count(nodes[0].api("/send/", &[("channel", "x"), ("qos", "1")], "m").await), 0);

    // Identities no live node holds.
    let ghost = format!("{}{}", "0badc0de", "0".repeat(56));
    let answer = nodes[0].api("/sub/", &[], json!({"identity": ghost, "channel": "x"}).to_string()).await;
    assert_eq!(answer, json!({"status": 1, "msg": "no such connection"}));
    let gone = format!("{}{}", &b[..8], "f".repeat(56));
    let answer = nodes[2].api("/sub/", &[], json!({"identity": gone, "channel": "x"}).to_string()).await;
    assert_eq!(answer, json!({"status": 1, "msg": "no such connection"}));
}

#[tokio::test]
async fn serverinfo_lists_every_node_and_a_killed_node_leaves_within_the_ttl() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok(r#"{"status":"success"}"#).header("rainbowclientchannel", "lobby"));
    let mut nodes = three_nodes(&redis, &backend).await;
    let (_a, _ea, _) = nodes[0].client(&backend, "a").await;
    let (_b, _eb, _) = nodes[1].client(&backend, "b").await;
    let (_c, _ec, c) = nodes[2].client(&backend, "c").await;

    let listed = nodes[0].nodes().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let ports: Vec<u64> = listed.iter().map(|n| n["port"].as_u64().unwrap()).collect();
    for node in &nodes {
        assert!(ports.contains(&(node.port as u64)), "{ports:?}");
    }
    // Heartbeats carry counts; each node has one connection in "lobby".
    let deadline = tokio::time::Instant::now() + TTL * 2;
    loop {
        let listed = nodes[1].nodes().await;
        if listed.iter().all(|n| n["connections"] == 1 && n["channels"]["lobby"] == 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "counts never showed: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    nodes[2].kill();
    let killed = tokio::time::Instant::now();
    // The others keep working at once.
    let answer = nodes[0].api("/send/", &[("channel", "lobby"), ("qos", "1"), ("timeout", "2")], "m").await;
    assert_eq!(answer["status"], 0);
    assert!(answer["connections"].as_u64().unwrap() >= 2, "{answer}");
    loop {
        if nodes[0].nodes().await.len() == 2 && nodes[1].nodes().await.len() == 2 {
            break;
        }
        assert!(killed.elapsed() < TTL + Duration::from_secs(2), "the killed node is still listed after the TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = nodes[1].api("/send/", &[("channel", "lobby"), ("qos", "1")], "m").await;
    assert_eq!(answer["connections"], 2);
    // Its connections left the directory with it.
    let answer = nodes[0].api("/sub/", &[], json!({"identity": c, "channel": "x"}).to_string()).await;
    assert_eq!(answer, json!({"status": 1, "msg": "no such connection"}));
}

#[tokio::test]
async fn redis_down_keeps_local_delivery_and_the_cluster_recovers_by_itself() {
    let mut redis = Redis::start().await;
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok(r#"{"status":"success"}"#).header("rainbowclientchannel", "room"));
    let nodes = three_nodes(&redis, &backend).await;
    let (_a, mut events_a, _) = nodes[0].client(&backend, "a").await;
    let (_b, _eb, b) = nodes[1].client(&backend, "b").await;
    let answer = nodes[0].api("/send/", &[("channel", "room"), ("qos", "1")], "m").await;
    assert_eq!(answer["connections"], 2);
    assert_eq!(next_payload(&mut events_a).await, b"m");

    redis.stop();
    // Cluster operations fail fast with a clear answer; local delivery goes on.
    let started = tokio::time::Instant::now();
    let answer = nodes[0].api("/send/", &[("channel", "room"), ("qos", "0")], "local").await;
    assert_eq!(answer["msg"], "cluster unavailable", "{answer}");
    assert_eq!(answer["connections"], 1);
    assert_eq!(next_payload(&mut events_a).await, b"local");
    let answer = nodes[0].api("/sub/", &[], json!({"identity": b, "channel": "y"}).to_string()).await;
    assert_eq!(answer, json!({"status": 1, "msg": "cluster unavailable"}));
    assert!(started.elapsed() < Duration::from_secs(3), "cluster errors took {:?}", started.elapsed());
    let info: Value =
        reqwest::get(format!("{}/serverinfo/?cluster=1", nodes[2].base())).await.unwrap().json().await.unwrap();
    assert_eq!(info["msg"], "cluster unavailable");
    assert_eq!(info["nodes"].as_array().map(Vec::len), Some(1));

    // Redis comes back (empty: no persistence): nodes rejoin and resubscribe.
    redis.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        while node.metric("rainbow_cluster_up ").await != Some(1.0) {
            assert!(tokio::time::Instant::now() < deadline, "node on port {} did not reconnect", node.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Reconnected means resubscribed: the first publish reaches both nodes.
    let answer = nodes[0].api("/send/", &[("channel", "room"), ("qos", "1"), ("timeout", "2")], "m").await;
    assert_eq!(answer, json!({"status": 0, "connections": 2, "data": "a"}));
    let answer = nodes[2].api("/sub/", &[], json!({"identity": b, "channel": "y"}).to_string()).await;
    assert_eq!(answer, json!({"status": 0}));
    assert_eq!(nodes[1].nodes().await.len(), 3);
}

/// Review bug 2 (orphaned connection): the handshake awaits the Redis
/// subscription of the connect hook's channel before answering 101. A
/// client that leaves during that wait must still be finished: out of the
/// hub, and its close hook run (the connect hook accepted it).
#[tokio::test]
async fn a_client_leaving_while_redis_is_slow_is_still_finished() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    backend.on_connect(Reply::ok(r#"{"status":"success"}"#).header("rainbowclientchannel", "slow"));
    let node = Node::start(&redis, &cluster_name(), &backend).await;
    // Redis stops answering for a while: the subscription waits for it.
    redis_command(redis.port, &["CLIENT", "PAUSE", "1500", "ALL"]).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let request = format!(
        "GET /connect/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         X-DEVICEID: d\r\nX-CLIENT-OS: o\r\n\r\n",
        node.port
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    backend.wait_calls("connect", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    // Once Redis answers again, the connection is finished like any other.
    backend.wait_calls("close", 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health: Value = reqwest::get(format!("{}/healthz", node.base())).await.unwrap().json().await.unwrap();
        if health["connections"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the connection stayed: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one command to Redis and waits for its answer line.
async fn redis_command(port: u16, args: &[&str]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"+OK"), "redis answered {:?}", String::from_utf8_lossy(&answer[..n]));
}
