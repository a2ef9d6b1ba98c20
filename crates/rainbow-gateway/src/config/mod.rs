//! Configuration: every key, its default, and how a bad value is reported.
//!
//! Settings come in layers, lowest first: a config file (INI as the original
//! `rainbow.ini`, or TOML), environment variables `RAINBOW_<KEY>`, then
//! command-line flags. [`Settings`] is the merged key → value map and
//! [`Config::from_settings`] turns it into typed values, naming the key, where
//! it came from and what is wrong when it fails. Tests build [`Settings`] from
//! plain pairs. Parsing of the two file formats lives in [`file`]; nothing here
//! reads sockets or starts anything.
//!
//! [`KEYS`] is the one list of keys: it drives validation, the unknown-key
//! check and `docs/configuration.md` (a test checks that every key is
//! documented there).

pub mod file;
pub mod route;
pub mod signing;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

/// A configuration key with its default and one line of help.
#[derive(Debug)]
pub struct Key {
    /// The key, as written in files and after `RAINBOW_`.
    pub name: &'static str,
    /// The config-file section it belongs to (`main`, `cluster`, ...). A file
    /// may also write any key under `[main]`, the original's only section.
    pub section: &'static str,
    /// The default, as a user would write it; empty when there is none.
    pub default: &'static str,
    /// What the key controls.
    pub help: &'static str,
}

macro_rules! keys {
    ($([$section:literal] { $($name:literal = $default:literal : $help:literal,)* })*) => {
        /// Every configuration key the gateway understands.
        pub const KEYS: &[Key] = &[$($(Key { name: $name, section: $section, default: $default, help: $help },)*)*];
    };
}

/// The config-file sections, in the order the docs list them.
pub const SECTIONS: &[&str] = &["main", "cluster", "workers"];

keys! {
    ["main"] {
    "security_token" = "" : "Shared secret for signing hooks and checking API signatures (required).",
    "connect_url" = "" : "Connect hook URL; empty accepts every connection without asking a backend.",
    "close_url" = "" : "Close hook URL; empty skips the close hook.",
    "forward_url" = "" : "Forward hook URL; `{message_type}` is replaced by the type (appended as a path segment, before any query, if absent).",
    "http_port" = "1984" : "Port for WebSocket and HTTP API. If not set and 1984 is taken, 1985..2003 are tried.",
    "bind" = "0.0.0.0" : "Address to listen on.",
    "cluster_name" = "" : "Cluster name: the prefix of every Redis key and channel, so several clusters can share one Redis (see [cluster]).",
    "hook_timeout" = "10s" : "Timeout of connect and close hook calls.",
    "forward_timeout" = "15s" : "Timeout of one forward hook call.",
    "forward_concurrency" = "1" : "Forwards in flight per connection; 1 keeps each connection's messages in order.",
    "max_pending_forwards" = "64" : "Messages queued per connection for forwarding; when full the gateway stops reading that client.",
    "max_inflight_forwards" = "1024" : "Forward calls in flight across the whole gateway.",
    "max_message_size" = "1MiB" : "Largest client message (bigger closes with 1009) and largest API body.",
    "outbox_capacity" = "1024" : "Messages queued towards one client; a client that lets it fill is closed with 1008 \"slow consumer\".",
    "max_queued_bytes" = "4MiB" : "Bytes one client connection may have waiting, in each of: its outbox (pushes and answers; over it the client is closed with 1008), its forward queue (over it the gateway stops reading the client) and its qos-2 replies kept until their REL (over it a new qos-2 message closes the client with 1008). Each item counts 64 bytes more than its payload. At least max_message_size.",
    "max_connections" = "100000" : "Connections held at once; further handshakes get 503. Never more than the process's open-file limit allows (less 512 kept for HTTP and hook calls).",
    "max_http_connections" = "4096" : "Accepted sockets that are not client WebSockets (handshakes under way, API and worker HTTP connections). A new one beyond it closes the oldest that is not serving a request, or is refused when all are busy.",
    "head_timeout" = "10s" : "Time a socket has to send a complete request head, from its opening or, kept alive, from its previous answer (so also how long an idle keep-alive connection is kept).",
    "body_timeout" = "10s" : "Time a signed API call has to send its whole body once its signature checked out.",
    "max_channels_per_connection" = "256" : "Channels one connection may be subscribed to; further subscriptions are refused and logged.",
    "max_message_rate" = "1000" : "Messages per second one client may send (burst of twice that); above it the client is closed with 1008. 0 disables.",
    "ping_interval" = "25s" : "Idle time after which the gateway pings a client.",
    "pong_timeout" = "20s" : "How long a ping may go unanswered before the connection is closed.",
    "retransmit_interval" = "3s" : "Interval between DUP retransmissions of unacknowledged qos 1/2 messages to clients.",
    "max_in_flight" = "256" : "Unacknowledged qos 1/2 messages per client; further ones wait in the outbox.",
    "qos2_window" = "128" : "qos-2 message ids per client remembered until their REL; a client exceeding it is closed with 1008.",
    "signature_window" = "10s" : "Accepted clock difference of API signatures.",
    "replay_cache_size" = "1000000" : "Signed API requests remembered for replay rejection inside the signature window.",
    "api_signature" = "any" : "Signatures accepted on the API and the worker handshake: `v1` (the original's SHA-1), `v2` (HMAC-SHA256 binding the request) or `any` (either, told apart by length). `v2` makes a captured v1 signature useless.",
    "v1_replay" = "reject" : "An identical v1-signed API request inside the signature window: `reject` it as a replay, or `allow` it (for rainbow-django 0.2, whose identical calls in one second collide).",
    "shutdown_timeout" = "10s" : "On SIGTERM/SIGINT, how long to wait for close hooks before exiting.",
    }
    ["cluster"] {
    "redis_url" = "" : "Redis or Valkey URL (`redis://[user:password@]host:port[/db]` or `unix:///path`) the nodes of a cluster share; empty runs this node alone.",
    "node_ttl" = "10s" : "A node that stops heartbeating leaves the cluster (and its connections the directory) after this long; heartbeats go every third of it.",
    "cluster_timeout" = "2s" : "How long a cluster operation waits for Redis before answering `cluster unavailable`.",
    }
    ["workers"] {
    "worker_route" = "auto" : "Where routed events go: `webhook`, `workers`, or `auto` (workers while any is attached, else the webhook; a message with no `forward_url` waits for a worker).",
    "worker_types" = "*" : "Message types routed by `worker_route`: `*` or a list like `1, 7, 100-199`; other types always go to `forward_url`.",
    "worker_events" = "connect,message,close" : "Events routed by `worker_route` (`*` or a list of connect, message, close); the others always use their webhook.",
    "worker_queue_size" = "10000" : "Tasks that may wait gateway-wide for a free worker; beyond it a qos-0 message is dropped (counted), a qos-1/2 message is left unanswered (the client retransmits), a connect gets 503.",
    "worker_queue_timeout" = "10s" : "Longest wait in the queue for a free worker (never beyond the task's forward_timeout/hook_timeout); then the task fails as on a full queue.",
    }
}

/// Where a setting came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A config file, by path.
    File(String),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag.
    Cli,
    /// A test or embedding program.
    Code,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Cli => f.write_str("command line"),
            Origin::Code => f.write_str("built-in settings"),
        }
    }
}

/// A configuration problem. It always names the key (or file) and what to fix.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A key has a value that does not parse or is out of range.
    #[error("config error: `{key}` (from {origin}): {problem}")]
    Invalid {
        /// The key.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A key the gateway does not know (a typo, most likely).
    #[error("config error: unknown key `{key}` (from {origin}); see docs/configuration.md for the keys")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where it came from.
        origin: Origin,
    },
    /// A required key is missing.
    #[error("config error: `{0}` is required; set it in the config file or as RAINBOW_{upper}", upper = .0.to_uppercase())]
    Missing(&'static str),
    /// The config file could not be read or parsed.
    #[error("config error: {path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// What went wrong (with a line number where there is one).
        problem: String,
    },
}

/// One raw setting.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The value as written.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Raw key → value settings, before typing. Later layers win.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, Setting>,
}

impl Settings {
    /// Settings from pairs, as code (tests, the demo) writes them.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Settings {
        let mut s = Settings::default();
        for (k, v) in pairs {
            s.set(k, v, Origin::Code);
        }
        s
    }

    /// Settings from `RAINBOW_*` environment variables. Unknown names are
    /// returned separately (the environment is shared with other programs, so
    /// they are warned about, not fatal).
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> (Settings, Vec<String>) {
        let mut s = Settings::default();
        let mut unknown = Vec::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("RAINBOW_") else { continue };
            let key = key.to_ascii_lowercase();
            if KEYS.iter().any(|k| k.name == key) {
                s.set(&key, &value, Origin::Env(name));
            } else {
                unknown.push(name);
            }
        }
        (s, unknown)
    }

    /// Sets one key (lower-cased).
    pub fn set(&mut self, key: &str, value: &str, origin: Origin) {
        self.values.insert(key.trim().to_ascii_lowercase(), Setting { value: value.trim().to_string(), origin });
    }

    /// Lays `over` on top of `self`.
    pub fn layer(mut self, over: Settings) -> Settings {
        self.values.extend(over.values);
        self
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.values.get(key)
    }
}

/// The gateway's typed configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shared secret of hook and API signatures.
    pub security_token: String,
    /// Connect hook; `None` accepts every connection.
    pub connect_url: Option<reqwest::Url>,
    /// Close hook; `None` skips it.
    pub close_url: Option<reqwest::Url>,
    /// Forward hook template; `None` drops client messages (logged, counted).
    pub forward_url: Option<String>,
    /// Listen address.
    pub bind: IpAddr,
    /// Listen port.
    pub http_port: u16,
    /// Whether the port was chosen explicitly (no fallback to 1985..2003).
    pub port_explicit: bool,
    /// Cluster name.
    pub cluster_name: String,
    /// Connect and close hook timeout.
    pub hook_timeout: Duration,
    /// Forward hook timeout.
    pub forward_timeout: Duration,
    /// Forwards in flight per connection.
    pub forward_concurrency: usize,
    /// Per-connection forward queue bound.
    pub max_pending_forwards: usize,
    /// Gateway-wide bound on forwards in flight.
    pub max_inflight_forwards: usize,
    /// Largest client message and API body, bytes.
    pub max_message_size: usize,
    /// Per-connection outbound queue bound, messages.
    pub outbox_capacity: usize,
    /// Per-connection byte bound of each queue (outbox, forward queue,
    /// remembered qos-2 replies).
    pub max_queued_bytes: usize,
    /// Connection limit.
    pub max_connections: usize,
    /// Accepted sockets that are not client WebSockets.
    pub max_http_connections: usize,
    /// Time to send a request head (also the keep-alive idle time).
    pub head_timeout: Duration,
    /// Time to send a signed call's body.
    pub body_timeout: Duration,
    /// Subscription limit per connection.
    pub max_channels_per_connection: usize,
    /// Client messages per second (0 = unlimited).
    pub max_message_rate: u32,
    /// Ping after this much idle time.
    pub ping_interval: Duration,
    /// Close when a ping is unanswered this long.
    pub pong_timeout: Duration,
    /// DUP retransmission interval towards clients.
    pub retransmit_interval: Duration,
    /// Unacknowledged qos 1/2 messages per client.
    pub max_in_flight: usize,
    /// qos-2 dedup window per client.
    pub qos2_window: usize,
    /// API signature clock window.
    pub signature_window: Duration,
    /// Replay cache bound.
    pub replay_cache_size: usize,
    /// Signature versions the API accepts.
    pub api_signature: signing::ApiSignature,
    /// Whether an identical v1 request inside the window is accepted.
    pub v1_replay: signing::V1Replay,
    /// Graceful shutdown bound.
    pub shutdown_timeout: Duration,
    /// The cluster's Redis; `None` runs this node alone.
    pub redis_url: Option<reqwest::Url>,
    /// How long a silent node stays in the cluster.
    pub node_ttl: Duration,
    /// How long a cluster operation waits for Redis.
    pub cluster_timeout: Duration,
    /// Where routed events go.
    pub worker_route: route::WorkerRoute,
    /// Message types routed by `worker_route`.
    pub worker_types: route::TypeSet,
    /// Events routed by `worker_route`.
    pub worker_events: route::EventSet,
    /// Bound of the task queue, tasks.
    pub worker_queue_size: usize,
    /// Bound of a task's wait in the queue.
    pub worker_queue_timeout: Duration,
}

/// Reads typed values out of [`Settings`], remembering the first error.
struct Reader<'a> {
    settings: &'a Settings,
}

impl Reader<'_> {
    fn raw(&self, key: &'static str) -> (String, Origin) {
        debug_assert!(KEYS.iter().any(|k| k.name == key), "{key} missing from KEYS");
        match self.settings.get(key) {
            Some(s) => (s.value.clone(), s.origin.clone()),
            None => {
                let default = KEYS.iter().find(|k| k.name == key).map_or("", |k| k.default);
                (default.to_string(), Origin::Code)
            }
        }
    }

    fn parse<T>(&self, key: &'static str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let (value, origin) = self.raw(key);
        parse(&value).map_err(|problem| ConfigError::Invalid { key: key.to_string(), origin, problem })
    }

    fn string(&self, key: &'static str) -> String {
        self.raw(key).0
    }

    fn url(&self, key: &'static str) -> Result<Option<reqwest::Url>, ConfigError> {
        self.parse(key, |v| if v.is_empty() { Ok(None) } else { parse_http_url(v).map(Some) })
    }

    fn count(&self, key: &'static str, min: usize) -> Result<usize, ConfigError> {
        self.parse(key, |v| {
            let n: usize = v.replace('_', "").parse().map_err(|_| format!("expected a whole number, got {v:?}"))?;
            if n < min { Err(format!("must be at least {min}, got {n}")) } else { Ok(n) }
        })
    }

    fn duration(&self, key: &'static str) -> Result<Duration, ConfigError> {
        self.parse(key, |v| {
            let d = parse_duration(v)?;
            if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
        })
    }

    fn size(&self, key: &'static str) -> Result<usize, ConfigError> {
        self.parse(key, parse_size)
    }
}

fn parse_http_url(v: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(v).map_err(|e| format!("not a URL ({e}): {v:?}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("expected an http:// or https:// URL, got scheme {other:?}")),
    }
}

fn parse_redis_url(v: &str) -> Result<Option<reqwest::Url>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let url = reqwest::Url::parse(v).map_err(|e| format!("not a URL ({e}); expected redis://host:port/db"))?;
    match url.scheme() {
        "redis" | "redis+unix" | "unix" => {}
        "rediss" => return Err("TLS to Redis (rediss://) is not built in; use redis:// or a local TLS tunnel".into()),
        other => return Err(format!("expected a redis:// or unix:// URL, got scheme {other:?}")),
    }
    // Checked by redis-rs itself (without echoing the URL, which may hold a password).
    redis::IntoConnectionInfo::into_connection_info(url.as_str())
        .map_err(|e| format!("redis-rs cannot use this URL ({:?})", e.kind()))?;
    Ok(Some(url))
}

/// Parses `15`, `1.5`, `15s`, `500ms` or `2m` into a duration (bare numbers
/// are seconds, as in the original).
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let n: f64 = number.trim().parse().map_err(|_| format!("expected a duration like 10s, 500ms or 2m, got {v:?}"))?;
    if !n.is_finite() || n < 0.0 || n * scale > 86_400.0 * 365.0 {
        return Err(format!("duration out of range: {v:?}"));
    }
    Ok(Duration::from_secs_f64(n * scale))
}

fn parse_size(v: &str) -> Result<usize, String> {
    let lower = v.trim().to_ascii_lowercase();
    let (number, scale) = [("kib", 1024), ("kb", 1024), ("k", 1024), ("mib", 1 << 20), ("mb", 1 << 20), ("m", 1 << 20)]
        .iter()
        .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.trim(), *scale)))
        .unwrap_or((lower.as_str(), 1));
    let n: usize = number.parse().map_err(|_| format!("expected a size like 1048576, 64KiB or 1MiB, got {v:?}"))?;
    let bytes = n.checked_mul(scale).ok_or_else(|| format!("size too large: {v:?}"))?;
    if bytes < 16 {
        return Err(format!("must be at least 16 bytes, got {v:?}"));
    }
    Ok(bytes)
}

impl Config {
    /// Types and validates merged settings.
    pub fn from_settings(settings: &Settings) -> Result<Config, ConfigError> {
        for (key, setting) in &settings.values {
            if !KEYS.iter().any(|k| k.name == key) {
                return Err(ConfigError::UnknownKey { key: key.clone(), origin: setting.origin.clone() });
            }
        }
        let r = Reader { settings };
        let security_token = r.string("security_token");
        if security_token.is_empty() {
            return Err(ConfigError::Missing("security_token"));
        }
        let forward_url = r.parse("forward_url", |v| {
            if v.is_empty() {
                return Ok(None);
            }
            parse_http_url(&v.replace("{message_type}", "0"))?;
            Ok(Some(v.to_string()))
        })?;
        let config = Config {
            security_token,
            connect_url: r.url("connect_url")?,
            close_url: r.url("close_url")?,
            forward_url,
            bind: r.parse("bind", |v| v.parse().map_err(|_| format!("expected an IP address, got {v:?}")))?,
            http_port: r.parse("http_port", |v| {
                v.parse::<u16>().map_err(|_| format!("expected a port number 0-65535, got {v:?}"))
            })?,
            port_explicit: settings.get("http_port").is_some(),
            cluster_name: r.string("cluster_name"),
            hook_timeout: r.duration("hook_timeout")?,
            forward_timeout: r.duration("forward_timeout")?,
            forward_concurrency: r.count("forward_concurrency", 1)?,
            max_pending_forwards: r.count("max_pending_forwards", 1)?,
            max_inflight_forwards: r.count("max_inflight_forwards", 1)?,
            max_message_size: r.size("max_message_size")?,
            outbox_capacity: r.count("outbox_capacity", 1)?,
            max_queued_bytes: r.size("max_queued_bytes")?,
            max_connections: r.count("max_connections", 1)?,
            max_http_connections: r.count("max_http_connections", 1)?,
            head_timeout: r.duration("head_timeout")?,
            body_timeout: r.duration("body_timeout")?,
            max_channels_per_connection: r.count("max_channels_per_connection", 1)?,
            max_message_rate: r.parse("max_message_rate", |v| {
                v.parse().map_err(|_| format!("expected messages per second (0 disables), got {v:?}"))
            })?,
            ping_interval: r.duration("ping_interval")?,
            pong_timeout: r.duration("pong_timeout")?,
            retransmit_interval: r.duration("retransmit_interval")?,
            max_in_flight: r.parse("max_in_flight", |v| match v.parse::<usize>() {
                Ok(n) if (1..=32768).contains(&n) => Ok(n),
                _ => Err(format!("expected 1..=32768 (message ids are 16-bit), got {v:?}")),
            })?,
            qos2_window: r.count("qos2_window", 1)?,
            signature_window: r.duration("signature_window")?,
            replay_cache_size: r.count("replay_cache_size", 1)?,
            api_signature: r.parse("api_signature", str::parse)?,
            v1_replay: r.parse("v1_replay", str::parse)?,
            shutdown_timeout: r.duration("shutdown_timeout")?,
            redis_url: r.parse("redis_url", parse_redis_url)?,
            node_ttl: r.parse("node_ttl", |v| match parse_duration(v)? {
                d if d >= Duration::from_secs(3) => Ok(d),
                _ => Err(format!("must be at least 3s (heartbeats go every third of it), got {v:?}")),
            })?,
            cluster_timeout: r.duration("cluster_timeout")?,
            worker_route: r.parse("worker_route", str::parse)?,
            worker_types: r.parse("worker_types", str::parse)?,
            worker_events: r.parse("worker_events", str::parse)?,
            worker_queue_size: r.count("worker_queue_size", 0)?,
            worker_queue_timeout: r.duration("worker_queue_timeout")?,
        };
        if config.max_queued_bytes < config.max_message_size || config.max_queued_bytes > u32::MAX as usize {
            let (_, origin) = r.raw("max_queued_bytes");
            return Err(ConfigError::Invalid {
                key: "max_queued_bytes".into(),
                origin,
                problem: format!(
                    "must be at least max_message_size ({} bytes), so one message always fits, and under 4 GiB; got {}",
                    config.max_message_size, config.max_queued_bytes
                ),
            });
        }
        Ok(config)
    }

    /// The forward hook URL for a message type, or `None` without a forward
    /// hook. `{message_type}` is replaced; without it the type is appended as
    /// a path segment (what the original server did).
    pub fn forward_url_for(&self, message_type: u16) -> Option<String> {
        let template = self.forward_url.as_deref()?;
        if template.contains("{message_type}") {
            return Some(template.replace("{message_type}", &message_type.to_string()));
        }
        // The type is a path segment: before the query or fragment, if any.
        let (path, rest) = template.split_at(template.find(['?', '#']).unwrap_or(template.len()));
        let slash = if path.ends_with('/') { "" } else { "/" };
        Some(format!("{path}{slash}{message_type}/{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![("security_token", "qwe123")];
        all.extend_from_slice(pairs);
        Config::from_settings(&Settings::from_pairs(all))
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../../../docs/configuration.md");
        for key in KEYS {
            let default = if key.default.is_empty() { "(none)".to_string() } else { format!("`{}`", key.default) };
            let row = format!("| `{}` | {default} |", key.name);
            assert!(doc.contains(&row), "docs/configuration.md lacks the row {row}");
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let c = config(&[]).unwrap();
        assert_eq!(c.http_port, 1984);
        assert!(!c.port_explicit);
        assert_eq!(c.forward_timeout, Duration::from_secs(15));
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.pong_timeout, Duration::from_secs(20));
        assert_eq!(c.retransmit_interval, Duration::from_secs(3));
        assert_eq!(c.forward_concurrency, 1);
        assert_eq!(c.api_signature, signing::ApiSignature::Any, "v1 backends keep working");
        assert_eq!(c.v1_replay, signing::V1Replay::Reject);
    }

    #[test]
    fn signature_keys_parse_and_name_the_key_when_wrong() {
        let c = config(&[("api_signature", "v2"), ("v1_replay", "allow")]).unwrap();
        assert_eq!((c.api_signature, c.v1_replay), (signing::ApiSignature::V2, signing::V1Replay::Allow));
        let err = config(&[("api_signature", "hmac")]).unwrap_err().to_string();
        assert!(err.contains("`api_signature`") && err.contains("v1, any or v2"), "{err}");
        let err = config(&[("v1_replay", "yes")]).unwrap_err().to_string();
        assert!(err.contains("`v1_replay`") && err.contains("reject or allow"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let err = config(&[("http_port", "abc")]).unwrap_err().to_string();
        assert!(err.contains("`http_port`") && err.contains("\"abc\""), "{err}");
        let err = config(&[("forward_timeout", "soon")]).unwrap_err().to_string();
        assert!(err.contains("`forward_timeout`") && err.contains("10s"), "{err}");
        let err = config(&[("conect_url", "http://x/")]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "conect_url"), "{err}");
        let err = config(&[("connect_url", "ftp://x/")]).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err = Config::from_settings(&Settings::default()).unwrap_err();
        assert_eq!(err, ConfigError::Missing("security_token"));
        assert!(err.to_string().contains("RAINBOW_SECURITY_TOKEN"));
    }

    #[test]
    fn units_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("2 MiB").unwrap(), 2 << 20);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn env_overrides_and_unknown_env_is_reported_not_fatal() {
        let (env, unknown) = Settings::from_env([
            ("RAINBOW_HTTP_PORT".to_string(), "2000".to_string()),
            ("RAINBOW_TOKEN".to_string(), "django setting".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        assert_eq!(unknown, vec!["RAINBOW_TOKEN".to_string()]);
        let base = Settings::from_pairs([("security_token", "t"), ("http_port", "1999")]);
        let c = Config::from_settings(&base.layer(env)).unwrap();
        assert_eq!(c.http_port, 2000);
        assert!(c.port_explicit);
    }

    #[test]
    fn forward_url_placeholder_or_appended_type() {
        let c = config(&[("forward_url", "http://b/rainbow/message/{message_type}/?x=1")]).unwrap();
        assert_eq!(c.forward_url_for(7).unwrap(), "http://b/rainbow/message/7/?x=1");
        let c = config(&[("forward_url", "http://b/msg")]).unwrap();
        assert_eq!(c.forward_url_for(7).unwrap(), "http://b/msg/7/");
        // Found while writing docs/protocol.md: the type went after the query.
        let c = config(&[("forward_url", "http://b/msg?x=1")]).unwrap();
        assert_eq!(c.forward_url_for(7).unwrap(), "http://b/msg/7/?x=1");
        let c = config(&[("forward_url", "http://b/msg/?x=1&y=2")]).unwrap();
        assert_eq!(c.forward_url_for(7).unwrap(), "http://b/msg/7/?x=1&y=2");
        let c = config(&[("forward_url", "http://b/msg#top")]).unwrap();
        assert_eq!(c.forward_url_for(7).unwrap(), "http://b/msg/7/#top");
    }
}
