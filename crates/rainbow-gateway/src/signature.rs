//! Request signatures (docs/protocol.md §7): signing our hook calls and checking the
//! backend's API calls and worker handshakes. The formulas are
//! `rainbow_protocol::signature`'s; this module adds the clock, the policy
//! (`api_signature`, `v1_replay`) and the replay cache.
//!
//! - Our hook calls are signed **v1** ([`sign`]): backends such as
//!   rainbow-django verify v1.
//! - API calls may be signed **v1** (40 hex digits, binds nothing of the
//!   request) or **v2** (64 hex digits, HMAC-SHA256 of the canonical request);
//!   `api_signature` says which are accepted.
//!
//! Checking happens in two steps so that no body is read for a call that
//! cannot be right ([`Verifier::check_query`], then [`QueryChecked::finish`]):
//!
//! 1. From the query alone: the parameters are present and well-formed, the
//!    version is accepted, the timestamp is inside the window; for v1 the
//!    whole signature is checked here (it covers nothing else).
//! 2. With the body: v2's HMAC over the canonical request (which contains
//!    the body's digest); then the replay rule.
//!
//! Replays: a v2 `(timestamp, nonce)` pair is accepted once inside the
//! window, whatever the request. A v1 request is refused when the very same
//! request (method, path, raw query and body) was accepted inside the window,
//! unless `v1_replay = allow`: the original Django SDK draws nonces from only
//! 9000 values, so its honest identical calls in one second collide. Every
//! comparison of signatures runs in constant time.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rainbow_protocol::signature::{self as formula, Version};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::config::signing::{ApiSignature, V1Replay};

pub use rainbow_protocol::signature::signature;

/// Why a signed call was refused. All but `Busy` answer the API's
/// `{"status": 1, "msg": "signature error"}`; the text goes to the log, and
/// says which side must do what.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// `timestamp`, `nonce` or `signature` is absent.
    #[error("missing timestamp, nonce or signature query parameter; the backend must sign every API call")]
    Missing,
    /// A parameter is there but not in the expected form.
    #[error("malformed {0}; see docs/protocol.md §7 for the form of signed calls")]
    Malformed(&'static str),
    /// The signature's version is not accepted by `api_signature`.
    #[error(
        "{given} signature refused: api_signature = {policy} on this gateway; {hint}",
        hint = if *.given == Version::V1 {
            "upgrade the backend's SDK to sign v2 (HMAC-SHA256)"
        } else {
            "sign v1, or set api_signature = any"
        }
    )]
    VersionRefused {
        /// The version the call was signed with.
        given: Version,
        /// The policy in force.
        policy: ApiSignature,
    },
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
    /// The signature does not match the token (and, for v2, the request).
    #[error(
        "{0} signature does not match; check that the backend uses the gateway's security_token{hint}",
        hint = if *.0 == Version::V2 { " and signs the request exactly as sent (docs/protocol.md §7.4)" } else { "" }
    )]
    Mismatch(Version),
    /// The same v1 request was already accepted inside the window.
    #[error(
        "replayed v1 request: this exact signed request was already accepted inside the signature window; \
         sign each call afresh, or set v1_replay = allow if an old SDK (rainbow-django 0.2) sends identical calls"
    )]
    ReplayedV1,
    /// The v2 `(timestamp, nonce)` pair was already used inside the window.
    #[error(
        "replayed v2 signature: timestamp and nonce were already used by an accepted call inside the window; \
         sign each call with a fresh nonce"
    )]
    ReplayedV2,
    /// The replay cache is full of requests still inside the window.
    #[error("too many signed requests inside the signature window (replay cache full); retry later")]
    Busy,
}

impl SignatureError {
    /// Whether this is a replay refusal.
    pub fn is_replay(&self) -> bool {
        matches!(self, SignatureError::ReplayedV1 | SignatureError::ReplayedV2)
    }
}

/// Query parameters of a freshly v1-signed call (our hook calls).
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

/// Signs a call made now, v1 (what our hook calls carry).
pub fn sign(token: &str) -> Signed {
    let timestamp = unix_now();
    let nonce: u32 = rand::random();
    Signed { timestamp, nonce, signature: signature(token, &timestamp.to_string(), &nonce.to_string()) }
}

/// The query string of an API call made now, signed v2 with a fresh random
/// nonce: `pairs`, then `timestamp`, `nonce` and `signature`
/// (`rainbow_protocol::signature::signed_query_v2`). `path` is the request
/// path as it will be sent.
pub fn signed_query_v2(token: &str, method: &str, path: &str, pairs: &[(&str, &str)], body: &[u8]) -> String {
    let nonce = formula::nonce_v2(rand::random());
    formula::signed_query_v2(token, method, path, pairs, body, &unix_now().to_string(), &nonce)
}

/// What `api_signature` and `v1_replay` say, read from the live
/// configuration for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Versions accepted.
    pub accept: ApiSignature,
    /// Identical v1 requests inside the window.
    pub v1_replay: V1Replay,
}

impl Policy {
    /// What checks a v1 hook call: v1 only, replays refused (the demo
    /// backend's check of our hooks).
    pub const HOOKS: Policy = Policy { accept: ApiSignature::V1, v1_replay: V1Replay::Reject };
}

/// The signing parameters of a call, as decoded from its query (first
/// occurrence of each).
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'a> {
    /// `timestamp`.
    pub timestamp: Option<&'a str>,
    /// `nonce`.
    pub nonce: Option<&'a str>,
    /// `signature`.
    pub signature: Option<&'a str>,
}

/// The parts of a request a signature or a replay key covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestId<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path, as in the request line (percent-encoded).
    pub path: &'a str,
    /// Raw query string (contains timestamp, nonce and signature).
    pub query: &'a str,
    /// Body.
    pub body: &'a [u8],
}

/// A call whose query checked out; [`QueryChecked::finish`] completes the
/// check once the body is read.
#[derive(Debug)]
#[must_use = "a call is accepted only once `finish` returns Ok"]
pub struct QueryChecked<'v> {
    verifier: &'v Verifier,
    token: String,
    policy: Policy,
    timestamp: i64,
    now: i64,
    step: Pending,
}

#[derive(Debug)]
enum Pending {
    /// The v1 signature is right; only the replay rule is left.
    V1,
    /// The HMAC and the replay rule are left.
    V2 {
        /// As received (decoded), for the canonical request.
        timestamp: String,
        nonce: String,
        /// Lower-cased.
        signature: String,
    },
}

impl QueryChecked<'_> {
    /// The version the call is signed with.
    pub fn version(&self) -> Version {
        match self.step {
            Pending::V1 => Version::V1,
            Pending::V2 { .. } => Version::V2,
        }
    }

    /// Completes the check with the whole request (its body read): v2's
    /// HMAC, then the replay rule. On success the call is remembered.
    pub fn finish(self, request: RequestId<'_>) -> Result<Version, SignatureError> {
        let version = self.version();
        let key = match &self.step {
            Pending::V1 => {
                if self.policy.v1_replay == V1Replay::Allow {
                    return Ok(version);
                }
                self.verifier.hasher.hash_one((1u8, request.method, request.path, request.query, request.body))
            }
            Pending::V2 { timestamp, nonce, signature } => {
                let canonical = formula::canonical_request(
                    request.method,
                    request.path,
                    &formula::canonical_query_of(request.query),
                    &formula::body_digest(request.body),
                    timestamp,
                    nonce,
                );
                let expected = formula::signature_v2(&self.token, &canonical);
                if !same(signature, &expected) {
                    return Err(SignatureError::Mismatch(Version::V2));
                }
                self.verifier.hasher.hash_one((2u8, self.timestamp, nonce.as_str()))
            }
        };
        self.verifier.remember(key, version, self.timestamp, self.now)?;
        Ok(version)
    }
}

/// Constant-time equality of two hex signatures (their lengths are public).
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Checks signed calls and remembers them for replay rejection.
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

impl Verifier {
    /// A verifier accepting timestamps within `window` and remembering at
    /// most `capacity` calls.
    pub fn new(window: Duration, capacity: usize) -> Verifier {
        Verifier { window, capacity, hasher: Default::default(), seen: Mutex::new(Seen::default()) }
    }

    /// Step 1: checks what the query alone can tell, at `now` (unix
    /// seconds), under `policy` and `token`.
    pub fn check_query(
        &self,
        token: &str,
        policy: Policy,
        params: Params<'_>,
        now: i64,
    ) -> Result<QueryChecked<'_>, SignatureError> {
        let (Some(ts), Some(nonce), Some(sig)) = (params.timestamp, params.nonce, params.signature) else {
            return Err(SignatureError::Missing);
        };
        let version = Version::of(sig).ok_or(SignatureError::Malformed(
            "signature (expected 40 hex digits for v1 or 64 for v2, docs/protocol.md §7)",
        ))?;
        match (policy.accept, version) {
            (ApiSignature::V1, Version::V2) | (ApiSignature::V2, Version::V1) => {
                return Err(SignatureError::VersionRefused { given: version, policy: policy.accept });
            }
            _ => {}
        }
        let sig = sig.trim().to_ascii_lowercase();
        let (timestamp, step) = match version {
            Version::V1 => {
                // The original's leniency: whitespace around the numbers.
                let timestamp: i64 =
                    ts.trim().parse().map_err(|_| SignatureError::Malformed("timestamp (expected Unix seconds)"))?;
                if nonce.trim().parse::<u64>().is_err() {
                    return Err(SignatureError::Malformed("nonce (v1 expects a non-negative integer)"));
                }
                (timestamp, Pending::V1)
            }
            Version::V2 => {
                // v2 signs the strings as sent, so they must be exactly so.
                let timestamp = if !ts.is_empty() && ts.len() <= 18 && ts.bytes().all(|b| b.is_ascii_digit()) {
                    ts.parse::<i64>().ok()
                } else {
                    None
                };
                let timestamp = timestamp
                    .ok_or(SignatureError::Malformed("timestamp (v2 expects Unix seconds in decimal digits)"))?;
                if !formula::is_v2_nonce(nonce) {
                    return Err(SignatureError::Malformed("nonce (v2 expects 1 to 64 characters of A-Z a-z 0-9 - _)"));
                }
                (timestamp, Pending::V2 { timestamp: ts.to_string(), nonce: nonce.to_string(), signature: sig.clone() })
            }
        };
        let window = self.window.as_secs();
        let skew = now.saturating_sub(timestamp);
        if skew.unsigned_abs() > window {
            return Err(SignatureError::Stale { timestamp, skew, window });
        }
        if version == Version::V1 && !same(&sig, &signature(token, ts.trim(), nonce.trim())) {
            return Err(SignatureError::Mismatch(Version::V1));
        }
        Ok(QueryChecked { verifier: self, token: token.to_string(), policy, timestamp, now, step })
    }

    /// Both steps at once, for a request whose body is at hand.
    pub fn verify(
        &self,
        token: &str,
        policy: Policy,
        params: Params<'_>,
        request: RequestId<'_>,
        now: i64,
    ) -> Result<Version, SignatureError> {
        self.check_query(token, policy, params, now)?.finish(request)
    }

    fn remember(&self, key: u64, version: Version, timestamp: i64, now: i64) -> Result<(), SignatureError> {
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
            return Err(match version {
                Version::V1 => SignatureError::ReplayedV1,
                Version::V2 => SignatureError::ReplayedV2,
            });
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
    const ANY: Policy = Policy { accept: ApiSignature::Any, v1_replay: V1Replay::Reject };
    const NOW: i64 = 1_700_000_000;

    fn p<'a>(ts: &'a str, nonce: &'a str, sig: &'a str) -> Params<'a> {
        Params { timestamp: Some(ts), nonce: Some(nonce), signature: Some(sig) }
    }

    /// A v2-signed request: its raw query and the request.
    fn v2_call(token: &str, path: &'static str, pairs: &[(&str, &str)], body: &'static [u8], nonce: &str) -> String {
        formula::signed_query_v2(token, "POST", path, pairs, body, &NOW.to_string(), nonce)
    }

    fn params_of(query: &str) -> (String, String, String) {
        let pairs = formula::query_pairs(query);
        let get = |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == n.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        (get("timestamp"), get("nonce"), get("signature"))
    }

    fn check_v2(v: &Verifier, policy: Policy, path: &str, query: &str, body: &[u8]) -> Result<Version, SignatureError> {
        let (ts, nonce, sig) = params_of(query);
        v.verify("tok", policy, p(&ts, &nonce, &sig), RequestId { method: "POST", path, query, body }, NOW)
    }

    #[test]
    fn matches_the_python_reference() {
        // sorted(["qwe123", "1400000000", "1234"]) = ["1234", "1400000000", "qwe123"]
        let expected = hex::encode(Sha1::digest(b"12341400000000qwe123"));
        assert_eq!(signature("qwe123", "1400000000", "1234"), expected);
    }

    #[test]
    fn v1_accepts_fresh_and_rejects_wrong_stale_missing_and_replayed() {
        let v = Verifier::new(Duration::from_secs(10), 100);
        let ts = NOW.to_string();
        let good = signature("tok", &ts, "42");
        assert_eq!(v.verify("tok", ANY, p(&ts, "42", &good), REQ, NOW), Ok(Version::V1));
        let replay = v.verify("tok", ANY, p(&ts, "42", &good), REQ, NOW + 1);
        assert_eq!(replay, Err(SignatureError::ReplayedV1));
        assert!(replay.unwrap_err().to_string().contains("v1_replay = allow"), "the log points to the switch");
        let other = RequestId { body: b"other", ..REQ };
        assert_eq!(v.verify("tok", ANY, p(&ts, "42", &good), other, NOW), Ok(Version::V1), "same nonce, new request");
        assert_eq!(
            v.verify("other-token", ANY, p(&ts, "42", &good), other, NOW),
            Err(SignatureError::Mismatch(Version::V1))
        );
        assert!(matches!(v.verify("tok", ANY, p("x", "1", &good), REQ, NOW), Err(SignatureError::Malformed(_))));
        assert!(matches!(v.verify("tok", ANY, p(&ts, "1", "nope"), REQ, NOW), Err(SignatureError::Malformed(_))));
        let no_nonce = Params { nonce: None, ..p(&ts, "", &good) };
        assert_eq!(v.verify("tok", ANY, no_nonce, REQ, NOW), Err(SignatureError::Missing));
        let old = (NOW - 11).to_string();
        let sig = signature("tok", &old, "42");
        assert!(matches!(v.verify("tok", ANY, p(&old, "42", &sig), REQ, NOW), Err(SignatureError::Stale { .. })));
        // Upper-case hex and whitespace around the numbers, as the original.
        let upper = signature("tok", &ts, "43").to_uppercase();
        let fresh = RequestId { query: "other", ..REQ };
        assert_eq!(v.verify("tok", ANY, p(&format!(" {ts}"), "43 ", &upper), fresh, NOW), Ok(Version::V1));
    }

    #[test]
    fn v1_replay_allow_accepts_the_identical_request() {
        let v = Verifier::new(Duration::from_secs(10), 100);
        let allow = Policy { v1_replay: V1Replay::Allow, ..ANY };
        let ts = NOW.to_string();
        let sig = signature("tok", &ts, "4242");
        for _ in 0..3 {
            assert_eq!(v.verify("tok", allow, p(&ts, "4242", &sig), REQ, NOW), Ok(Version::V1));
        }
        // The switch is read per call: back to reject, and the same request
        // is new to the cache (allow did not record it), then a replay.
        assert_eq!(v.verify("tok", ANY, p(&ts, "4242", &sig), REQ, NOW), Ok(Version::V1));
        assert_eq!(v.verify("tok", ANY, p(&ts, "4242", &sig), REQ, NOW), Err(SignatureError::ReplayedV1));
    }

    #[test]
    fn v2_binds_the_request_and_its_nonce_is_used_once() {
        let v = Verifier::new(Duration::from_secs(10), 100);
        let body: &[u8] = br#"{"n":1}"#;
        let q = v2_call("tok", "/send/", &[("channel", "room 1"), ("qos", "1")], body, "abc");
        assert_eq!(check_v2(&v, ANY, "/send/", &q, body), Ok(Version::V2));
        assert_eq!(check_v2(&v, ANY, "/send/", &q, body), Err(SignatureError::ReplayedV2));
        // The same signature for another request fails to verify, whatever the nonce state.
        let q2 = v2_call("tok", "/send/", &[("channel", "room 1"), ("qos", "1")], body, "def");
        let other_channel = q2.replace("room%201", "room%202");
        assert_eq!(check_v2(&v, ANY, "/send/", &other_channel, body), Err(SignatureError::Mismatch(Version::V2)));
        assert_eq!(check_v2(&v, ANY, "/send/", &q2, b"{}"), Err(SignatureError::Mismatch(Version::V2)));
        assert_eq!(check_v2(&v, ANY, "/sub/", &q2, body), Err(SignatureError::Mismatch(Version::V2)));
        // `+` and `%20` are the same canonical space; parameter order does not matter.
        let plus = q2.replace("room%201", "room+1");
        assert_eq!(check_v2(&v, ANY, "/send/", &plus, body), Ok(Version::V2));
        // A fresh nonce signs a new call; a wrong token does not verify.
        let q3 = v2_call("not-tok", "/send/", &[], body, "ghi");
        assert_eq!(check_v2(&v, ANY, "/send/", &q3, body), Err(SignatureError::Mismatch(Version::V2)));
    }

    #[test]
    fn v2_query_checks_come_before_the_body() {
        let v = Verifier::new(Duration::from_secs(10), 100);
        let sig = "a".repeat(64);
        let ts = NOW.to_string();
        // Everything a query can get wrong is found without a body.
        assert!(matches!(v.check_query("tok", ANY, p(&ts, "a.b", &sig), NOW), Err(SignatureError::Malformed(_))));
        assert!(matches!(v.check_query("tok", ANY, p(" 1", "ab", &sig), NOW), Err(SignatureError::Malformed(_))));
        let old = (NOW - 11).to_string();
        assert!(matches!(v.check_query("tok", ANY, p(&old, "ab", &sig), NOW), Err(SignatureError::Stale { .. })));
        let checked = v.check_query("tok", ANY, p(&ts, "ab", &sig), NOW).unwrap();
        assert_eq!(checked.version(), Version::V2);
        // A v1 signature is wholly checked from the query.
        let v1 = signature("tok", &ts, "1");
        assert_eq!(v.check_query("tok", ANY, p(&ts, "1", &v1), NOW).map(|c| c.version()), Ok(Version::V1));
        let wrong = signature("other", &ts, "1");
        assert_eq!(
            v.check_query("tok", ANY, p(&ts, "1", &wrong), NOW).err(),
            Some(SignatureError::Mismatch(Version::V1))
        );
    }

    #[test]
    fn api_signature_picks_the_versions() {
        let v = Verifier::new(Duration::from_secs(10), 100);
        let ts = NOW.to_string();
        let v1 = signature("tok", &ts, "1");
        let v2 = "b".repeat(64);
        let only = |accept| Policy { accept, ..ANY };
        let refused = v.check_query("tok", only(ApiSignature::V2), p(&ts, "1", &v1), NOW).err();
        assert_eq!(refused, Some(SignatureError::VersionRefused { given: Version::V1, policy: ApiSignature::V2 }));
        assert!(refused.unwrap().to_string().contains("upgrade the backend's SDK"));
        let refused = v.check_query("tok", only(ApiSignature::V1), p(&ts, "1", &v2), NOW).err();
        assert_eq!(refused, Some(SignatureError::VersionRefused { given: Version::V2, policy: ApiSignature::V1 }));
        assert!(v.check_query("tok", only(ApiSignature::V1), p(&ts, "1", &v1), NOW).is_ok());
        assert!(v.check_query("tok", only(ApiSignature::V2), p(&ts, "1", &v2), NOW).is_ok());
    }

    #[test]
    fn replay_cache_is_bounded_and_forgets_expired_requests() {
        let v = Verifier::new(Duration::from_secs(10), 1);
        let ts = NOW.to_string();
        let sig = signature("tok", &ts, "1");
        assert_eq!(v.verify("tok", ANY, p(&ts, "1", &sig), REQ, NOW), Ok(Version::V1));
        let other = RequestId { path: "/sub/", ..REQ };
        assert_eq!(v.verify("tok", ANY, p(&ts, "1", &sig), other, NOW), Err(SignatureError::Busy));
        // Past the window the first entry is pruned, so there is room; the
        // timestamp is now stale, so a fresh signature is needed.
        let later = NOW + 12;
        let ts2 = later.to_string();
        let sig2 = signature("tok", &ts2, "1");
        assert_eq!(v.verify("tok", ANY, p(&ts2, "1", &sig2), other, later), Ok(Version::V1));
    }
}
