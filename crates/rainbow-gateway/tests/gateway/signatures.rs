//! API signatures against the real `rainbow` binary (docs/protocol.md §7):
//! what a captured v1 or v2 signature is worth under each `api_signature`,
//! the `v1_replay` switch and its warning, both keys reloaded by
//! `/updateconfig/`, and a refused call answered without waiting for its
//! body.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rainbow_protocol::signature::{canonical_query_of, query_pairs, signature, signed_query_v1, signed_query_v2};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TOKEN, WAIT};

const REFUSED: fn() -> Value = || json!({"status": 1, "msg": "signature error"});
const SENT: fn() -> Value = || json!({"status": 0});

/// A `rainbow serve -c FILE` process on a free loopback port, its output
/// (the log) collected; killed on drop.
struct Gateway {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts the binary with `extra` lines in `[main]`.
    async fn start(extra: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let gw_dir = dir.path().to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rainbow"))
            .args(["serve", "-c"])
            .arg(Self::write_config(&gw_dir, extra))
            .args(["-p", &port.to_string()])
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The log goes to one of the two streams; collect both.
        let log = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for stream in streams {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let gw = Gateway { port, child, dir, log };
        let deadline = tokio::time::Instant::now() + WAIT;
        while reqwest::get(gw.url("/hello/")).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "rainbow serve did not start: {}", gw.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw
    }

    fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
        let path = dir.join("rainbow.ini");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "[main]\nsecurity_token = {TOKEN}\nbind = 127.0.0.1\n{extra}\n").unwrap();
        path
    }

    /// Rewrites the config file with `extra` and reloads it with a v2-signed
    /// `/updateconfig/`.
    async fn reconfigure(&self, extra: &str) {
        Self::write_config(self.dir.path(), extra);
        let (status, answer) = self.v2("GET", "/updateconfig/", &[], b"").await;
        assert_eq!((status, answer["status"].clone()), (200, json!(0)), "{answer}");
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    /// The log so far, without colour codes.
    fn log(&self) -> String {
        let text = self.log.lock().unwrap().clone();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                plain.push(c);
            }
        }
        plain
    }

    /// Waits until the log has a line containing every one of `parts`.
    async fn wait_log(&self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(tokio::time::Instant::now() < deadline, "no log line with {parts:?} in:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A call with exactly this query string and body.
    async fn call(&self, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = reqwest::Client::new()
            .request(method, self.url(&format!("{path}?{query}")))
            .body(body.to_vec())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    /// A v2-signed call made now.
    async fn v2(&self, method: &str, path: &str, pairs: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        self.call(method, path, &v2_query(method, path, pairs, body), body).await
    }

    /// A v1-signed call made now.
    async fn v1(&self, method: &str, path: &str, pairs: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        self.call(method, path, &v1_query(pairs), body).await
    }

    /// The worker handshake with this query: 101 or the refusal's status.
    async fn worker_handshake(&self, query: &str) -> u16 {
        let url = format!("ws://127.0.0.1:{}/worker/?{query}", self.port);
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("unexpected handshake error: {e}"),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> String {
    rainbow_gateway::signature::unix_now().to_string()
}

fn fresh_nonce() -> String {
    rainbow_protocol::signature::nonce_v2(rand::random())
}

fn v2_query(method: &str, path: &str, pairs: &[(&str, &str)], body: &[u8]) -> String {
    signed_query_v2(TOKEN, method, path, pairs, body, &now(), &fresh_nonce())
}

fn v1_query(pairs: &[(&str, &str)]) -> String {
    signed_query_v1(TOKEN, pairs, &now(), &rand::random::<u32>().to_string())
}

/// The `(timestamp, nonce, signature)` of a signed query.
fn triple(query: &str) -> [(String, String); 3] {
    let pairs = query_pairs(query);
    ["timestamp", "nonce", "signature"].map(|name| {
        let value = pairs.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.clone()).unwrap_or_default();
        (name.to_string(), String::from_utf8(value).unwrap())
    })
}

/// `pairs` followed by a captured triple.
fn with_triple(pairs: &[(&str, &str)], captured: &[(String, String); 3]) -> String {
    let mut all: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.extend(captured.iter().cloned());
    form_urlencoded::Serializer::new(String::new()).extend_pairs(all).finish()
}

#[tokio::test]
async fn v2_only_makes_a_captured_v1_triple_useless() {
    let gw = Gateway::start("api_signature = v2").await;
    let room_a = [("channel", "a"), ("qos", "0")];
    let captured = triple(&v1_query(&room_a));
    // The request it was made for, another channel, the admin call, the
    // worker handshake: all refused.
    assert_eq!(gw.call("POST", "/send/", &with_triple(&room_a, &captured), b"hi").await, (200, REFUSED()));
    let room_b = [("channel", "b"), ("qos", "0")];
    assert_eq!(gw.call("POST", "/send/", &with_triple(&room_b, &captured), b"hi").await, (200, REFUSED()));
    assert_eq!(gw.call("GET", "/updateconfig/", &with_triple(&[], &captured), b"").await, (200, REFUSED()));
    assert_eq!(gw.call("POST", "/sub/", &with_triple(&[], &captured), b"{}").await, (200, REFUSED()));
    assert_eq!(gw.worker_handshake(&with_triple(&[], &captured)).await, 401);
    let line = gw.wait_log(&["v1 signature refused", "api_signature = v2", "backend"]).await;
    assert!(line.contains("WARN"), "{line}");
    // v2 calls work: the API, the admin call and the worker handshake.
    assert_eq!(gw.v2("POST", "/send/", &room_a, b"hi").await, (200, SENT()));
    assert_eq!(gw.v2("GET", "/updateconfig/", &[], b"").await.1["status"], 0);
    assert_eq!(gw.worker_handshake(&v2_query("GET", "/worker/", &[("name", "w")], b"")).await, 101);
    // The Rust worker library signs v2 by default; asked for v1 it is refused.
    let base = format!("ws://127.0.0.1:{}/worker/", gw.port);
    let v1_worker =
        rainbow_worker::WorkerConfig::new(base, TOKEN).signature_version(rainbow_worker::SignatureVersion::V1);
    let refused = tokio::time::timeout(WAIT, rainbow_worker::Worker::new(v1_worker).run()).await.unwrap();
    assert!(matches!(refused, Err(rainbow_worker::WorkerError::Refused { status: 401, .. })), "{refused:?}");
}

#[tokio::test]
async fn a_captured_v2_signature_is_bound_to_its_request_and_used_once() {
    let gw = Gateway::start("").await;
    let room_a = [("channel", "a"), ("qos", "0")];
    let body = br#"{"n":1}"#;
    let query = v2_query("POST", "/send/", &room_a, body);
    assert_eq!(gw.call("POST", "/send/", &query, body).await, (200, SENT()));
    let captured = triple(&query);
    // Another channel, another body, another endpoint: the HMAC fails
    // (checked before the replay rule, so the log says so).
    let room_b = [("channel", "b"), ("qos", "0")];
    assert_eq!(gw.call("POST", "/send/", &with_triple(&room_b, &captured), body).await, (200, REFUSED()));
    assert_eq!(gw.call("POST", "/send/", &with_triple(&room_a, &captured), b"{\"n\":2}").await, (200, REFUSED()));
    assert_eq!(gw.call("POST", "/unsub/", &with_triple(&room_a, &captured), body).await, (200, REFUSED()));
    assert_eq!(gw.call("GET", "/updateconfig/", &with_triple(&[], &captured), b"").await, (200, REFUSED()));
    assert_eq!(gw.worker_handshake(&with_triple(&[], &captured)).await, 401);
    gw.wait_log(&["v2 signature does not match", "side=\"backend\""]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.log().matches("v2 signature does not match").count() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The very same request again: a replay.
    assert_eq!(gw.call("POST", "/send/", &query, body).await, (200, REFUSED()));
    let line = gw.wait_log(&["replayed v2 signature"]).await;
    assert!(line.contains("WARN") && line.contains("side=\"backend\""), "{line}");
    // `+` for a space and any parameter order sign the same request.
    let spaced = [("channel", "room 1"), ("qos", "0")];
    let query = v2_query("POST", "/send/", &spaced, body);
    let reordered = {
        let mut pieces: Vec<&str> = query.split('&').collect();
        pieces.reverse();
        pieces.join("&").replace("%20", "+")
    };
    assert_eq!(canonical_query_of(&reordered), canonical_query_of(&query));
    assert_eq!(gw.call("POST", "/send/", &reordered, body).await, (200, SENT()));
    // A replayed handshake URL is refused too.
    let handshake = v2_query("GET", "/worker/", &[("name", "w")], b"");
    assert_eq!(gw.worker_handshake(&handshake).await, 101);
    assert_eq!(gw.worker_handshake(&handshake).await, 401);
}

#[tokio::test]
async fn any_accepts_both_v1_refuses_v2_and_the_keys_reload() {
    // Default: `any`. A v1 triple is the old weakness: valid for any request
    // in the window (which is why `v2` exists).
    let gw = Gateway::start("").await;
    let room_a = [("channel", "a"), ("qos", "0")];
    assert_eq!(gw.v1("POST", "/send/", &room_a, b"x").await, (200, SENT()));
    assert_eq!(gw.v2("POST", "/send/", &room_a, b"x").await, (200, SENT()));
    let captured = triple(&v1_query(&room_a));
    let room_b = [("channel", "b"), ("qos", "0")];
    assert_eq!(gw.call("POST", "/send/", &with_triple(&room_b, &captured), b"y").await, (200, SENT()));

    // `v1`: v2 refused, v1 accepted (reloaded, no restart).
    gw.reconfigure("api_signature = v1").await;
    assert_eq!(gw.v2("POST", "/send/", &room_a, b"x").await, (200, REFUSED()));
    gw.wait_log(&["v2 signature refused", "api_signature = v1"]).await;
    assert_eq!(gw.v1("POST", "/send/", &room_a, b"x").await, (200, SENT()));

    // And on to `v2`, through a v1-signed reload (still allowed).
    Gateway::write_config(gw.dir.path(), "api_signature = v2");
    let (_, answer) = gw.v1("GET", "/updateconfig/", &[], b"").await;
    assert_eq!(answer, json!({"status": 0, "restart_required": []}));
    assert_eq!(gw.v1("POST", "/send/", &room_a, b"x").await, (200, REFUSED()));
    assert_eq!(gw.v2("POST", "/send/", &room_a, b"x").await, (200, SENT()));
    // A bad value is refused and the one in force stays.
    Gateway::write_config(gw.dir.path(), "api_signature = v3");
    let (_, answer) = gw.v2("GET", "/updateconfig/", &[], b"").await;
    assert!(answer["msg"].as_str().unwrap().contains("api_signature"), "{answer}");
    assert_eq!(gw.v1("POST", "/send/", &room_a, b"x").await, (200, REFUSED()));
}

#[tokio::test]
async fn v1_replay_allow_accepts_the_rainbow_django_burst_and_reject_warns() {
    // rainbow-django 0.2: two identical send() calls in one second with the
    // same nonce (it draws from 9000 values) are the same signed request.
    let gw = Gateway::start("v1_replay = allow").await;
    let pairs = [("channel", "room"), ("msgtype", "1001"), ("qos", "0")];
    let ts = now();
    let burst = signed_query_v1(TOKEN, &pairs, &ts, "4242");
    for _ in 0..3 {
        assert_eq!(gw.call("POST", "/send/", &burst, b"{\"n\":1}").await, (200, SENT()));
    }
    // v2 keeps its own rule whatever v1_replay says.
    let query = v2_query("POST", "/send/", &pairs, b"x");
    assert_eq!(gw.call("POST", "/send/", &query, b"x").await, (200, SENT()));
    assert_eq!(gw.call("POST", "/send/", &query, b"x").await, (200, REFUSED()));

    // `reject` (the default): the second identical call is refused, and the
    // warning points the operator at the switch.
    gw.reconfigure("").await;
    let burst = signed_query_v1(TOKEN, &pairs, &now(), "4243");
    assert_eq!(gw.call("POST", "/send/", &burst, b"{\"n\":1}").await, (200, SENT()));
    assert_eq!(gw.call("POST", "/send/", &burst, b"{\"n\":1}").await, (200, REFUSED()));
    let line = gw.wait_log(&["replayed v1 request", "v1_replay = allow"]).await;
    assert!(line.contains("WARN") && line.contains("side=\"backend\"") && line.contains("endpoint=\"send\""), "{line}");
    // The same nonce in another request is not a replay.
    assert_eq!(gw.call("POST", "/send/", &burst, b"{\"n\":2}").await, (200, SENT()));
}

/// Writes the head of a POST whose body never comes, and returns what the
/// gateway answered within two seconds (empty when it kept waiting).
async fn answer_without_body(port: u16, query: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head =
        format!("POST /send/?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{{\"partial\": ");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_refused_call_is_answered_without_waiting_for_its_body() {
    let gw = Gateway::start("").await;
    let ts = now();
    let old = (rainbow_gateway::signature::unix_now() - 60).to_string();
    let refused = [
        ("unsigned", "channel=a".to_string()),
        ("wrong v1", format!("channel=a&timestamp={ts}&nonce=1&signature={}", signature("guess", &ts, "1"))),
        ("stale v2", format!("channel=a&timestamp={old}&nonce=abc&signature={}", "0".repeat(64))),
        ("bad v2 nonce", format!("channel=a&timestamp={ts}&nonce=a.b&signature={}", "0".repeat(64))),
        ("neither", format!("channel=a&timestamp={ts}&nonce=1&signature=abc")),
    ];
    for (what, query) in refused {
        let started = std::time::Instant::now();
        let answer = answer_without_body(gw.port, &query).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer:?}");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        assert_eq!(serde_json::from_str::<Value>(body).ok(), Some(REFUSED()), "{what}: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "{what}: answered after {:?}", started.elapsed());
    }
    // A v2 call that may be right needs its body: the gateway waits for it.
    let plausible = format!("channel=a&timestamp={ts}&nonce=abc&signature={}", "0".repeat(64));
    assert_eq!(answer_without_body(gw.port, &plausible).await, "", "answered before the body came");
}
