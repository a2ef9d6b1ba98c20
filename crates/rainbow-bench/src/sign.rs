//! Signing the gateway's backend API calls (docs/protocol.md §7).
//!
//! `signature = hex(sha1(concat(sorted([token, str(timestamp), str(nonce)]))))`,
//! sent as the query parameters `timestamp`, `nonce` and `signature`. The
//! gateway refuses a request (method, path, query and body) it has already
//! accepted inside its signature window, so every call made here gets a nonce
//! no other call of this process uses: a counter started at a per-process
//! random-looking value.

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

/// The signing query of a call made now, with a fresh nonce.
pub fn query(token: &str, nonces: &Nonces) -> String {
    query_at(token, unix_secs(), nonces.next())
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
