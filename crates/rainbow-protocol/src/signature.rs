//! The signature of hook and API calls (docs/protocol.md §7), shared by the gateway, the
//! worker library and the benchmark so there is one definition of it.
//!
//! `signature = hex(sha1(concat(sorted([token, str(timestamp), str(nonce)]))))`
//! with a plain string sort. Checking (constant-time comparison, the time
//! window, replays) belongs to the gateway.

use sha1::{Digest, Sha1};

/// The signature of `(timestamp, nonce)` under `token`.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let mut sha = Sha1::new();
    for part in parts {
        sha.update(part.as_bytes());
    }
    hex::encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_original_python() {
        // hashlib.sha1("".join(sorted(["qwe123", "1700000000", "4242"])).encode()).hexdigest()
        let expected = {
            let mut sha = Sha1::new();
            sha.update(b"17000000004242qwe123");
            hex::encode(sha.finalize())
        };
        assert_eq!(signature("qwe123", "1700000000", "4242"), expected);
        assert_ne!(signature("qwe123", "1700000000", "4243"), expected);
    }
}
