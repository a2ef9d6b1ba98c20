//! Request signatures (docs/protocol.md §7): signing our hook calls and checking the
//! backend's API calls.
//!
//! `signature = hex(sha1(concat(sorted([token, str(timestamp), str(nonce)]))))`.
//! Checking compares in constant time, accepts timestamps within the
//! configured window of our clock, and rejects a replay: the same request
//! (method, path, query and body) seen before inside the window. The replay
//! key is the whole request rather than the nonce alone because the original
//! Django SDK draws nonces from only 9000 values, so two honest calls in the
//! same second can share one.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use thiserror::Error;

/// Why a signed call was refused. All but `Busy` answer the API's
/// `{"status": 1, "msg": "signature error"}`; the variant goes to the log.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// `timestamp`, `nonce` or `signature` is absent or not a number.
    #[error("missing or malformed timestamp/nonce/signature query parameters")]
    Missing,
    /// The timestamp is outside the accepted window of our clock.
    #[error(
        "timestamp {timestamp} is {skew}s away from the gateway clock (window {window}s); check the backend's clock"
    )]
    Stale {
        /// The caller's timestamp.
        timestamp: i64,
        /// Difference to our clock, seconds.
        skew: i64,
        /// The accepted window, seconds.
        window: u64,
    },
    /// The signature does not match the token.
    #[error("signature does not match; check that the backend uses the gateway's security_token")]
    Mismatch,
    /// The very same signed request was already accepted.
    #[error("replayed request (the same signed request was already accepted)")]
    Replayed,
    /// The replay cache is full of requests still inside the window.
    #[error("too many signed requests inside the signature window (replay cache full)")]
    Busy,
}

/// Query parameters of a freshly signed call.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Unix seconds.
    pub timestamp: i64,
    /// Random number.
    pub nonce: u32,
    /// Hex SHA-1.
    pub signature: String,
}

impl Signed {
    /// The three query pairs, for a URL.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            ("timestamp", self.timestamp.to_string()),
            ("nonce", self.nonce.to_string()),
            ("signature", self.signature.clone()),
        ]
    }
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub use rainbow_protocol::signature::signature;

/// Signs a call made now.
pub fn sign(token: &str) -> Signed {
    let timestamp = unix_now();
    let nonce: u32 = rand::random();
    Signed { timestamp, nonce, signature: signature(token, &timestamp.to_string(), &nonce.to_string()) }
}

/// Checks signed API calls and remembers them for replay rejection.
#[derive(Debug)]
pub struct Verifier {
    window: Duration,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<u64>,
    /// (expiry in unix seconds, key), in insertion order; expiries are
    /// non-decreasing up to clock steps, which only delay pruning.
    order: VecDeque<(i64, u64)>,
}

/// The parts of a request that make it unique, for replay detection.
#[derive(Debug, Clone, Copy)]
pub struct RequestId<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Raw query string (contains timestamp, nonce and signature).
    pub query: &'a str,
    /// Body.
    pub body: &'a [u8],
}

impl Verifier {
    /// A verifier accepting timestamps within `window` and remembering at
    /// most `capacity` requests.
    pub fn new(window: Duration, capacity: usize) -> Verifier {
        Verifier { window, capacity, hasher: Default::default(), seen: Mutex::new(Seen::default()) }
    }

    /// Checks `timestamp`, `nonce`, `signature` (raw query values) against
    /// `token` at `now` (unix seconds), then records the request.
    pub fn verify(
        &self,
        token: &str,
        params: (Option<&str>, Option<&str>, Option<&str>),
        request: RequestId<'_>,
        now: i64,
    ) -> Result<(), SignatureError> {
        let (Some(ts), Some(nonce), Some(sig)) = params else {
            return Err(SignatureError::Missing);
        };
        let timestamp: i64 = ts.trim().parse().map_err(|_| SignatureError::Missing)?;
        if nonce.trim().parse::<u64>().is_err() {
            return Err(SignatureError::Missing);
        }
        let window = self.window.as_secs();
        let skew = now.saturating_sub(timestamp);
        if skew.unsigned_abs() > window {
            return Err(SignatureError::Stale { timestamp, skew, window });
        }
        let expected = signature(token, ts.trim(), nonce.trim());
        // Lengths are public (always 40 hex digits); the bytes are compared in
        // constant time. Case-insensitive like hex itself.
        let given = sig.trim().to_ascii_lowercase();
        if given.len() != expected.len() || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(SignatureError::Mismatch);
        }
        self.remember(request, timestamp, now)
    }

    fn remember(&self, request: RequestId<'_>, timestamp: i64, now: i64) -> Result<(), SignatureError> {
        let key = self.hasher.hash_one((request.method, request.path, request.query, request.body));
        let expiry = timestamp + self.window.as_secs() as i64 + 1;
        // A poisoned lock only means another thread panicked mid-update; the
        // set is still a valid set, so keep using it.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(exp, k)) = seen.order.front() {
            if exp >= now {
                break;
            }
            seen.order.pop_front();
            seen.keys.remove(&k);
        }
        if seen.keys.contains(&key) {
            return Err(SignatureError::Replayed);
        }
        if seen.keys.len() >= self.capacity {
            return Err(SignatureError::Busy);
        }
        seen.keys.insert(key);
        seen.order.push_back((expiry, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    const REQ: RequestId<'static> = RequestId { method: "POST", path: "/send/", query: "q", body: b"{}" };

    #[test]
    fn matches_the_python_reference() {
        // sorted(["qwe123", "1400000000", "1234"]) = ["1234", "1400000000", "qwe123"]
        let expected = hex::encode(Sha1::digest(b"12341400000000qwe123"));
        assert_eq!(signature("qwe123", "1400000000", "1234"), expected);
    }

    #[test]
    fn accepts_fresh_and_rejects_wrong_stale_missing_and_replayed() {
        let v = Verifier::new(Duration::from_secs(10), 100);
        let now = 1_700_000_000;
        let ts = now.to_string();
        let good = signature("tok", &ts, "42");
        let p = |sig: &'static str| (Some("x"), Some("1"), Some(sig));
        assert_eq!(v.verify("tok", (Some(&ts), Some("42"), Some(&good)), REQ, now), Ok(()));
        assert_eq!(v.verify("tok", (Some(&ts), Some("42"), Some(&good)), REQ, now + 1), Err(SignatureError::Replayed));
        let other = RequestId { body: b"other", ..REQ };
        assert_eq!(
            v.verify("tok", (Some(&ts), Some("42"), Some(&good)), other, now),
            Ok(()),
            "same nonce, new request"
        );
        assert_eq!(
            v.verify("other-token", (Some(&ts), Some("42"), Some(&good)), other, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(v.verify("tok", p("nope"), REQ, now), Err(SignatureError::Missing));
        assert_eq!(v.verify("tok", (Some(&ts), None, Some(&good)), REQ, now), Err(SignatureError::Missing));
        let old = (now - 11).to_string();
        let sig = signature("tok", &old, "42");
        assert!(matches!(
            v.verify("tok", (Some(&old), Some("42"), Some(&sig)), REQ, now),
            Err(SignatureError::Stale { .. })
        ));
    }

    #[test]
    fn replay_cache_is_bounded_and_forgets_expired_requests() {
        let v = Verifier::new(Duration::from_secs(10), 1);
        let now = 1_700_000_000;
        let ts = now.to_string();
        let sig = signature("tok", &ts, "1");
        let params = (Some(ts.as_str()), Some("1"), Some(sig.as_str()));
        assert_eq!(v.verify("tok", params, REQ, now), Ok(()));
        let other = RequestId { path: "/sub/", ..REQ };
        assert_eq!(v.verify("tok", params, other, now), Err(SignatureError::Busy));
        // Past the window the first entry is pruned, so there is room; the
        // timestamp is now stale, so a fresh signature is needed.
        let later = now + 12;
        let ts2 = later.to_string();
        let sig2 = signature("tok", &ts2, "1");
        assert_eq!(v.verify("tok", (Some(&ts2), Some("1"), Some(&sig2)), other, later), Ok(()));
    }
}
