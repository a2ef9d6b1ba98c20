//! [`WorkerConfig`]: where the gateway is, the shared token, the window
//! (credits), and reconnection; plus building the signed handshake URL
//! (docs/worker-protocol.md §1). The handshake is signed v2 (HMAC-SHA256
//! over the method, path and query, docs/protocol.md §7.4) unless the user
//! asks for v1 to reach a gateway older than v2 signatures.

use std::time::Duration;

pub use rainbow_protocol::signature::Version as SignatureVersion;
use rainbow_protocol::signature::{self as formula, SIGNING_PARAMS};

use crate::error::WorkerError;

/// How a worker connects and behaves.
///
/// ```
/// use std::time::Duration;
/// use rainbow_worker::WorkerConfig;
///
/// let config = WorkerConfig::new("ws://127.0.0.1:1984/worker/", "qwe123")
///     .name("orders")
///     .credits(32)
///     .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) name: Option<String>,
    pub(crate) credits: u32,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) ping_interval: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) signature: SignatureVersion,
}

/// Largest window the protocol allows.
pub const MAX_CREDITS: u32 = rainbow_protocol::worker::MAX_CREDITS;

impl WorkerConfig {
    /// A worker of the gateway at `url` (`ws://HOST:PORT/worker/`; a URL
    /// without a path gets `/worker/`, and `http(s)://` becomes `ws(s)://`)
    /// signing with `token` (the gateway's `security_token`). Defaults: 16
    /// credits, reconnect backoff 100 ms doubling to 5 s, calls time out
    /// after 30 s, messages up to 1 MiB, a ping every 15 s.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            url: url.into(),
            token: token.into(),
            name: None,
            credits: 16,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            max_message_size: (1 << 20) + 64 * 1024,
            ping_interval: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            signature: SignatureVersion::V2,
        }
    }

    /// How the handshake is signed (docs/protocol.md §7): v2 by default;
    /// [`SignatureVersion::V1`] for a gateway older than v2 signatures (one
    /// that answers a v2-signed handshake with 401). A gateway configured with
    /// `api_signature = v2` refuses v1.
    pub fn signature_version(mut self, version: SignatureVersion) -> WorkerConfig {
        self.signature = version;
        self
    }

    /// The name shown in the gateway's logs and `/serverinfo/` (≤ 64 bytes).
    pub fn name(mut self, name: impl Into<String>) -> WorkerConfig {
        self.name = Some(name.into());
        self
    }

    /// How many tasks this worker handles at once (0..=10000): the gateway
    /// never sends more unanswered tasks than this.
    pub fn credits(mut self, credits: u32) -> WorkerConfig {
        self.credits = credits.min(MAX_CREDITS);
        self
    }

    /// Reconnection delays: `min` after the first failure, doubling up to
    /// `max` (with jitter).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> WorkerConfig {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// How long an API call waits for its answer (at least the delivery
    /// timeout of a `send`/`push` plus 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> WorkerConfig {
        self.call_timeout = timeout;
        self
    }

    /// Largest frame accepted from the gateway (its `max_message_size` plus
    /// 64 KiB).
    pub fn max_message_size(mut self, bytes: usize) -> WorkerConfig {
        self.max_message_size = bytes;
        self
    }

    /// How often the worker pings a quiet gateway; three intervals without
    /// any frame end the session (and it reconnects).
    pub fn ping_interval(mut self, interval: Duration) -> WorkerConfig {
        self.ping_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// The delay before reconnection attempt `attempt` (0-based), with up
    /// to 25 % random jitter so restarted workers do not reconnect in step.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.backoff_min.saturating_mul(1u32 << attempt.min(16)).min(self.backoff_max);
        let jitter = rand::random::<f64>() * 0.25;
        base.mul_f64(1.0 + jitter)
    }

    /// The handshake URL, freshly signed.
    pub(crate) fn signed_url(&self) -> Result<String, WorkerError> {
        let mut url = self.url.trim().to_owned();
        if let Some(rest) = url.strip_prefix("http://") {
            url = format!("ws://{rest}");
        } else if let Some(rest) = url.strip_prefix("https://") {
            url = format!("wss://{rest}");
        }
        let Some(after_scheme) = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://")) else {
            return Err(WorkerError::InvalidUrl(self.url.clone()));
        };
        if after_scheme.is_empty() || after_scheme.starts_with('/') {
            return Err(WorkerError::InvalidUrl(self.url.clone()));
        }
        if !after_scheme.contains('/') {
            url.push_str("/worker/");
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        match self.signature {
            SignatureVersion::V1 => {
                let nonce = rand::random::<u32>().to_string();
                let signature = signature(&self.token, &timestamp, &nonce);
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("timestamp={timestamp}&nonce={nonce}&signature={signature}"));
                if let Some(name) = &self.name {
                    url.push_str("&name=");
                    url.push_str(&formula::percent_encode(name.as_bytes()));
                }
                Ok(url)
            }
            SignatureVersion::V2 => {
                let nonce = formula::nonce_v2(rand::random());
                Ok(signed_v2(&url, &self.token, self.name.as_deref(), &timestamp, &nonce))
            }
        }
    }
}

/// `url` (`ws[s]://HOST[:PORT]/PATH[?QUERY]`) with its query rebuilt and
/// signed v2 for a `GET`: the URL's own parameters (but any `timestamp`,
/// `nonce`, `signature` or `name`), then `name`, `timestamp`, `nonce` and
/// `signature`.
fn signed_v2(url: &str, token: &str, name: Option<&str>, timestamp: &str, nonce: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    // The path as the request line will carry it: after the authority.
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
    let given: Vec<(String, String)> = formula::query_pairs(query)
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned()))
        .filter(|(k, _)| !SIGNING_PARAMS.contains(&k.as_str()) && k != "name")
        .collect();
    let mut pairs: Vec<(&str, &str)> = given.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Some(name) = name {
        pairs.push(("name", name));
    }
    let query = formula::signed_query_v2(token, "GET", path, &pairs, b"", timestamp, nonce);
    format!("{base}?{query}")
}

pub use rainbow_protocol::signature::signature;

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    #[test]
    fn signature_matches_the_reference() {
        // sorted(["qwe123", "1400000000", "1234"]) = ["1234", "1400000000", "qwe123"]
        let expected = hex::encode(Sha1::digest(b"12341400000000qwe123"));
        assert_eq!(signature("qwe123", "1400000000", "1234"), expected);
    }

    #[test]
    fn urls_are_normalised_and_signed() {
        let v1 = |c: WorkerConfig| c.signature_version(SignatureVersion::V1);
        let url = v1(WorkerConfig::new("http://h:1984", "t").name("a b")).signed_url().unwrap();
        assert!(url.starts_with("ws://h:1984/worker/?timestamp="), "{url}");
        assert!(url.ends_with("&name=a%20b"), "{url}");
        let url = v1(WorkerConfig::new("ws://h:1/w/?x=1", "t")).signed_url().unwrap();
        assert!(url.starts_with("ws://h:1/w/?x=1&timestamp="), "{url}");
        // v2 by default: the URL's own query, the name, then the signing parameters.
        let url = WorkerConfig::new("http://h:1984", "t").name("a b").signed_url().unwrap();
        assert!(url.starts_with("ws://h:1984/worker/?name=a%20b&timestamp="), "{url}");
        let url = WorkerConfig::new("wss://h/w/?x=1+2&nonce=old", "t").signed_url().unwrap();
        assert!(url.starts_with("wss://h/w/?x=1%202&timestamp="), "{url}");
        assert_eq!(url.matches("nonce=").count(), 1, "{url}");
        assert!(WorkerConfig::new("ftp://h", "t").signed_url().is_err());
        assert!(WorkerConfig::new("ws://", "t").signed_url().is_err());
    }

    /// The test vector of docs/protocol.md §7.4, through the library's
    /// own formula.
    #[test]
    fn v2_matches_the_test_vector() {
        let query = formula::signed_query_v2(
            "qwe123",
            "POST",
            "/send/",
            &[("channel", "room 1"), ("msgtype", "1001"), ("qos", "1")],
            br#"{"n":1}"#,
            "1700000000",
            "4f9c2a1b7d3e6a5c",
        );
        assert!(query.ends_with("&signature=4855ef57fa5d2bbb0f52dc09ffb98820947442c1bb48ecdbe20e61b5b7d7d2bc"));
    }

    #[test]
    fn v2_handshake_urls_verify() {
        let url = signed_v2("ws://h:1/worker/?x=1", "qwe123", Some("w 1"), "1700000000", "abc");
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "ws://h:1/worker/");
        let signature = query.rsplit_once("signature=").unwrap().1;
        let canonical = formula::canonical_request(
            "GET",
            "/worker/",
            &formula::canonical_query_of(query),
            &formula::body_digest(b""),
            "1700000000",
            "abc",
        );
        assert_eq!(canonical.lines().nth(3), Some("name=w%201&nonce=abc&timestamp=1700000000&x=1"));
        assert_eq!(signature, formula::signature_v2("qwe123", &canonical));
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let c = WorkerConfig::new("ws://h", "t").reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1));
        assert!(c.backoff(0) >= Duration::from_millis(100) && c.backoff(0) <= Duration::from_millis(125));
        assert!(c.backoff(2) >= Duration::from_millis(400));
        assert!(c.backoff(30) <= Duration::from_millis(1250));
    }
}
