//! `rainbow demo`: the gateway plus the seed's chat room, in one process.
//!
//! The chat backend here is an ordinary Rainbow backend that happens to run
//! in the same process: it listens on its own loopback port, the gateway calls
//! its hooks over HTTP (signed v1, as every backend gets them), and it pushes
//! with the HTTP API, signed v2 (docs/protocol.md §7.4). No
//! shortcut through the gateway's internals, so it doubles as an example
//! backend written in Rust.
//!
//! Chat protocol (the seed's demo):
//! - type 0 `{"message": name}`: set your name and join channel `room`;
//!   everyone gets 1001 `{"name", "identity"}` and 1003 `{"online": n}`;
//! - type 1 `{"message": text}`: everyone gets 1002 `{"name", "message", "identity"}`;
//! - leaving (the close hook): everyone gets 1004 `{"name", "identity"}` and 1003.
//!
//! The page (`/`) and the JavaScript client (`/rainbow.js`) are the files in
//! `clients/js`, embedded at build time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::signature::{self, Params, Policy, RequestId, Verifier, unix_now};

/// The browser client, served at `/rainbow.js` by every gateway.
pub const RAINBOW_JS: &str = include_str!("../../../clients/js/rainbow.js");
/// The chat page, served at `/` by `rainbow demo`.
pub const CHAT_PAGE: &str = include_str!("../../../clients/js/demo/index.html");

/// Chat message types.
const SET_NAME: u16 = 0;
const SAY: u16 = 1;
const JOINED: u16 = 1001;
const SAID: u16 = 1002;
const ONLINE: u16 = 1003;
const LEFT: u16 = 1004;
const ROOM: &str = "room";

/// `GET /rainbow.js`.
pub async fn rainbow_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], RAINBOW_JS)
        .into_response()
}

/// The routes `rainbow demo` adds to the gateway: the chat page.
pub fn page_routes() -> Router {
    Router::new().route("/", get(|| async { Html(CHAT_PAGE) }))
}

struct Chat {
    token: String,
    gateway: String,
    http: reqwest::Client,
    verifier: Verifier,
    /// identity → name, for everyone who joined.
    names: Mutex<HashMap<String, String>>,
}

/// The chat backend: bound first (the gateway's config needs its URLs), then
/// served once the gateway's address is known.
pub struct ChatBackend {
    listener: tokio::net::TcpListener,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ChatBackend {
    /// Binds a free loopback port.
    pub async fn bind() -> std::io::Result<ChatBackend> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(ChatBackend { listener, addr })
    }

    /// `connect_url`.
    pub fn connect_url(&self) -> String {
        format!("http://{}/rainbow/connect/", self.addr)
    }
    /// `forward_url`.
    pub fn forward_url(&self) -> String {
        format!("http://{}/rainbow/message/{{message_type}}/", self.addr)
    }
    /// `close_url`.
    pub fn close_url(&self) -> String {
        format!("http://{}/rainbow/close/", self.addr)
    }

    /// Serves the hooks. `gateway` is the gateway's base URL for API calls;
    /// `token` the shared security token.
    pub fn serve(self, gateway: String, token: String) -> std::io::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let chat = Arc::new(Chat {
            http,
            verifier: Verifier::new(Duration::from_secs(10), 100_000),
            names: Mutex::new(HashMap::new()),
            token,
            gateway,
        });
        let app = Router::new()
            .route("/rainbow/connect/", get(connect))
            .route("/rainbow/message/{t}/", post(message))
            .route("/rainbow/close/", get(close))
            .with_state(chat);
        let listener = self.listener;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!("demo backend stopped: {e}");
            }
        });
        Ok(())
    }
}

impl Chat {
    /// Checks the gateway's signature on a hook call (v1, as every backend
    /// gets them).
    fn verify(&self, method: &Method, uri: &Uri, body: &[u8]) -> bool {
        let pairs = crate::handshake::query_pairs(uri);
        let get = |name: &str| crate::handshake::param(&pairs, name);
        let id = RequestId { method: method.as_str(), path: uri.path(), query: uri.query().unwrap_or(""), body };
        let params = Params { timestamp: get("timestamp"), nonce: get("nonce"), signature: get("signature") };
        self.verifier.verify(&self.token, Policy::HOOKS, params, id, unix_now()).is_ok()
    }

    /// An API call to the gateway, signed v2 (bound to this path, query and
    /// body).
    async fn api(&self, path: &str, query: &[(&str, String)], body: String) {
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let query = signature::signed_query_v2(&self.token, "POST", path, &pairs, body.as_bytes());
        let url = format!("{}{path}?{query}", self.gateway);
        match self.http.post(url).body(body).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => warn!(path, status = r.status().as_u16(), side = "gateway", "demo backend API call refused"),
            Err(e) => warn!(path, side = "gateway", "demo backend API call failed: {e}"),
        }
    }

    async fn broadcast(&self, message_type: u16, data: Value) {
        let query = [("channel", ROOM.to_string()), ("msgtype", message_type.to_string()), ("qos", "0".to_string())];
        self.api("/send/", &query, data.to_string()).await;
    }

    async fn announce_online(&self) {
        let online = self.names.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.broadcast(ONLINE, json!({"online": online})).await;
    }
}

fn identity(headers: &HeaderMap) -> String {
    headers.get("RAINBOWCLIENTIDENTITY").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// The name stored in the context cookie (base64 of `{"name": ...}`).
fn name_from_cookie(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("RAINBOWCLIENTCOOKIE")?.to_str().ok()?;
    let json: Value = serde_json::from_slice(&BASE64.decode(raw).ok()?).ok()?;
    json.get("name")?.as_str().map(String::from)
}

fn reply(body: Value) -> Response {
    axum::Json(body).into_response()
}

fn refused() -> Response {
    ([("RAINBOWREQUESTINVALID", "60001")], reply(json!({"status": "error", "msg": "bad signature"}))).into_response()
}

async fn connect(State(chat): State<Arc<Chat>>, method: Method, uri: Uri) -> Response {
    if !chat.verify(&method, &uri, b"") {
        return refused();
    }
    reply(json!({"status": "success"}))
}

async fn message(
    State(chat): State<Arc<Chat>>,
    Path(t): Path<u16>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !chat.verify(&method, &uri, &body) {
        return refused();
    }
    let who = identity(&headers);
    let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = data.get("message").and_then(Value::as_str).unwrap_or("").trim().to_string();
    match t {
        SET_NAME if !text.is_empty() => {
            let name: String = text.chars().take(32).collect();
            chat.names.lock().unwrap_or_else(|p| p.into_inner()).insert(who.clone(), name.clone());
            // Join first, so the joiner also hears its own announcement.
            chat.api("/sub/", &[], json!({"identity": who, "channel": ROOM}).to_string()).await;
            chat.broadcast(JOINED, json!({"name": name, "identity": who})).await;
            chat.announce_online().await;
            info!(%name, "demo: joined");
            let cookie = BASE64.encode(json!({"name": name}).to_string());
            ([("RAINBOWCLIENTCOOKIE", cookie)], reply(json!({"status": "ok", "identity": who, "name": name})))
                .into_response()
        }
        SAY if !text.is_empty() => {
            let Some(name) = name_from_cookie(&headers) else {
                return reply(json!({"status": "error", "msg": "set your name first"}));
            };
            let message: String = text.chars().take(2000).collect();
            chat.broadcast(SAID, json!({"name": name, "message": message, "identity": who})).await;
            reply(json!({"status": "ok"}))
        }
        _ => reply(json!({"status": "error", "msg": "expected {\"message\": \"...\"} with type 0 or 1"})),
    }
}

async fn close(State(chat): State<Arc<Chat>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !chat.verify(&method, &uri, b"") {
        return refused();
    }
    let who = identity(&headers);
    let left = chat.names.lock().unwrap_or_else(|p| p.into_inner()).remove(&who);
    if let Some(name) = left {
        chat.broadcast(LEFT, json!({"name": name, "identity": who})).await;
        chat.announce_online().await;
        info!(%name, "demo: left");
    }
    reply(json!({"status": "success"}))
}
