//! Signing the gateway's backend API calls and the forward hook calls the
//! bench makes itself (docs/protocol.md §7), with `rainbow_protocol::signature`.
//!
//! - API calls (`/send/` of `fanout`) are signed **v2** by default
//!   ([`query_v2`]): HMAC-SHA256 over the method, path, query and body.
//!   `--signature v1` signs them v1 ([`query`]) for gateways older than v2
//!   signatures.
//! - Forward hook calls (`rpc`'s direct leg, which plays the gateway) are
//!   signed **v1** ([`query`]), as the gateway signs its hooks.
//!
//! Every call made here gets a nonce no other call of this process uses: a
//! counter started at a per-process random-looking value (decimal for v1, 16
//! hex digits for v2), so the gateway's replay rule never refuses one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use rainbow_protocol::signature::signature;

/// Unix time in whole seconds (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Hands out nonces no other call of this process uses.
#[derive(Debug)]
pub struct Nonces {
    next: AtomicU64,
}

impl Nonces {
    /// Nonces starting at `first`.
    pub fn starting_at(first: u64) -> Nonces {
        Nonces { next: AtomicU64::new(first) }
    }

    /// Nonces starting at a value drawn from the clock and the process id,
    /// so two bench processes started together do not share a sequence.
    /// Kept below 2^48 so the number stays exact in any JSON or float parser.
    pub fn new() -> Nonces {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Nonces::starting_at((mixed >> 20) & ((1 << 47) - 1))
    }

    /// The next nonce.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for Nonces {
    fn default() -> Nonces {
        Nonces::new()
    }
}

/// The `timestamp=..&nonce=..&signature=..` query of a call made at
/// `timestamp` with `nonce`.
pub fn query_at(token: &str, timestamp: u64, nonce: u64) -> String {
    let (ts, nonce) = (timestamp.to_string(), nonce.to_string());
    let sig = signature(token, &ts, &nonce);
    format!("timestamp={ts}&nonce={nonce}&signature={sig}")
}

/// The signing query of a call made now, with a fresh nonce (v1).
pub fn query(token: &str, nonces: &Nonces) -> String {
    query_at(token, unix_secs(), nonces.next())
}

/// The whole v2-signed query of a call to `path` (as in the request line,
/// without a query) carrying `pairs` and `body`, made at `timestamp` with
/// `nonce`: the pairs, then `timestamp`, `nonce` and `signature`.
pub fn query_v2_at(
    token: &str,
    method: &str,
    path: &str,
    pairs: &[(&str, &str)],
    body: &[u8],
    timestamp: u64,
    nonce: u64,
) -> String {
    let nonce = rainbow_protocol::signature::nonce_v2(nonce);
    rainbow_protocol::signature::signed_query_v2(token, method, path, pairs, body, &timestamp.to_string(), &nonce)
}

/// [`query_v2_at`] for a call made now, with a fresh nonce.
pub fn query_v2(token: &str, method: &str, path: &str, pairs: &[(&str, &str)], body: &[u8], nonces: &Nonces) -> String {
    query_v2_at(token, method, path, pairs, body, unix_secs(), nonces.next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    #[test]
    fn matches_the_python_reference() {
        // Python: sha1("".join(sorted(["qwe123", "1400000000", "1234"]))).hexdigest()
        // sorted = ["1234", "1400000000", "qwe123"]
        assert_eq!(signature("qwe123", "1400000000", "1234"), "86c89d062a7a2c4bf76bf719ec0869fe3eef734b");
    }

    #[test]
    fn sorting_is_a_plain_string_sort() {
        // "9" sorts after "10" as a string; a numeric sort would differ.
        let expected = "59ecfd8262ae7e11477209ad564f63ef30926f7a";
        assert_eq!(hex::encode(Sha1::digest(b"109tok")), expected);
        assert_eq!(signature("tok", "9", "10"), expected);
        assert_eq!(signature("tok", "10", "9"), expected, "the order of the inputs does not matter");
    }

    #[test]
    fn query_has_the_three_parameters() {
        let q = query_at("bench", 1_700_000_000, 42);
        assert_eq!(q, format!("timestamp=1700000000&nonce=42&signature={}", signature("bench", "1700000000", "42")));
    }

    /// The test vector of docs/protocol.md §7.4.
    #[test]
    fn v2_matches_the_test_vector() {
        let q = query_v2_at(
            "qwe123",
            "POST",
            "/send/",
            &[("channel", "room 1"), ("msgtype", "1001"), ("qos", "1")],
            br#"{"n":1}"#,
            1_700_000_000,
            0x4f9c_2a1b_7d3e_6a5c,
        );
        assert_eq!(
            q,
            "channel=room%201&msgtype=1001&qos=1&timestamp=1700000000&nonce=4f9c2a1b7d3e6a5c\
             &signature=4855ef57fa5d2bbb0f52dc09ffb98820947442c1bb48ecdbe20e61b5b7d7d2bc"
        );
    }

    #[test]
    fn nonces_never_repeat_within_a_process() {
        let nonces = Nonces::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(nonces.next()));
        }
        let n = Nonces::new().next();
        assert!(n < 1 << 48, "{n}");
    }
}
