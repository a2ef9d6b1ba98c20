//! The signatures of hook and API calls (docs/protocol.md §7), shared by the
//! gateway, the worker library and the benchmark so there is one definition
//! of each. Pure functions: the caller brings the clock and the randomness.
//! Checking (constant-time comparison, the time window, replays) belongs to
//! the gateway.
//!
//! Two versions, told apart by the length of the `signature` parameter:
//!
//! - **v1** ([`signature`], 40 hex digits), the original's:
//!   `hex(sha1(concat(sorted([token, str(timestamp), str(nonce)]))))` with a
//!   plain string sort. It binds nothing of the request. The gateway still
//!   signs its hook calls this way, and accepts it on the API unless
//!   configured not to (`api_signature = v2`).
//! - **v2** ([`signature_v2`], 64 hex digits):
//!   `hex(HMAC-SHA256(token, canonical))` where [`canonical_request`] binds
//!   the method, the path, every query parameter but `signature`
//!   ([`canonical_query`]), the SHA-256 of the body ([`body_digest`]), the
//!   timestamp and the nonce. [`signed_query_v2`] does all of it for a call
//!   about to be made.

use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// The first line of a v2 canonical request: the algorithm's name.
pub const ALGORITHM: &str = "RAINBOW-HMAC-SHA256";
/// Hex digits of a v1 signature (SHA-1).
pub const V1_LEN: usize = 40;
/// Hex digits of a v2 signature (HMAC-SHA256).
pub const V2_LEN: usize = 64;
/// Longest v2 nonce, characters.
pub const MAX_NONCE_LEN: usize = 64;
/// The query parameters a signer adds (and a v2 signer adds after the
/// caller's own): they are never taken from the caller's pairs.
pub const SIGNING_PARAMS: [&str; 3] = ["timestamp", "nonce", "signature"];

/// A signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// SHA-1 of the sorted token, timestamp and nonce (binds no request).
    V1,
    /// HMAC-SHA256 of the canonical request.
    V2,
}

impl Version {
    /// The version a `signature` parameter is written in, by its length
    /// (surrounding whitespace ignored): 40 characters are v1, 64 are v2,
    /// anything else is neither.
    pub fn of(signature: &str) -> Option<Version> {
        match signature.trim().len() {
            V1_LEN => Some(Version::V1),
            V2_LEN => Some(Version::V2),
            _ => None,
        }
    }

    /// `v1` or `v2`, as the configuration and the docs write it.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The v1 signature of `(timestamp, nonce)` under `token`.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let mut sha = Sha1::new();
    for part in parts {
        sha.update(part.as_bytes());
    }
    hex::encode(sha.finalize())
}

/// Whether `nonce` is a valid v2 nonce: 1 to [`MAX_NONCE_LEN`] characters of
/// `A-Z a-z 0-9 - _`.
pub fn is_v2_nonce(nonce: &str) -> bool {
    (1..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A v2 nonce made of 64 random bits: 16 lower-case hex digits.
pub fn nonce_v2(random: u64) -> String {
    format!("{random:016x}")
}

/// Percent-encodes `bytes` by RFC 3986: every byte but `A-Z a-z 0-9 - . _ ~`
/// becomes `%XX` with upper-case hex (a space is `%20`).
pub fn percent_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Decodes one name or value of a query string as form encoding does: `+`
/// is a space, `%XX` is the byte XX, and a `%` not followed by two hex digits
/// stays as it is. The result is bytes: nothing requires UTF-8.
pub fn form_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The decoded `(name, value)` pairs of a raw query string (without the
/// `?`), in order: split on `&` (empty pieces skipped), each piece on its
/// first `=` (none: the value is empty), each side [`form_decode`]d.
pub fn query_pairs(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.as_bytes()
        .split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &piece[..0]),
            };
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// The canonical query of v2 from decoded `(name, value)` pairs: every pair
/// but those named `signature`, each side [`percent_encode`]d, sorted by
/// encoded name then encoded value (byte order), joined as `name=value` with
/// `&`. `timestamp` and `nonce` are among the pairs.
pub fn canonical_query<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> String
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut encoded: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(name, _)| name.as_ref() != b"signature")
        .map(|(name, value)| (percent_encode(name.as_ref()), percent_encode(value.as_ref())))
        .collect();
    encoded.sort_unstable();
    let mut out = String::new();
    for (name, value) in encoded {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&name);
        out.push('=');
        out.push_str(&value);
    }
    out
}

/// The canonical query of a raw query string as received (see
/// [`query_pairs`] and [`canonical_query`]).
pub fn canonical_query_of(raw: &str) -> String {
    canonical_query(query_pairs(raw))
}

/// Lower-case hex SHA-256 of a body (of the empty string for no body).
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The v2 canonical request, the message the HMAC signs: seven lines joined
/// by `\n` (no newline at the end): [`ALGORITHM`], the method (upper case as
/// sent), the path as in the request line (still percent-encoded, no query),
/// the [`canonical_query`], the [`body_digest`], the timestamp and the nonce.
pub fn canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    body_digest: &str,
    timestamp: &str,
    nonce: &str,
) -> String {
    [ALGORITHM, method, path, canonical_query, body_digest, timestamp, nonce].join("\n")
}

/// The v2 signature of a canonical request: lower-case hex
/// HMAC-SHA256 keyed with the token's UTF-8 bytes.
pub fn signature_v2(token: &str, canonical_request: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail; fall back to an
    // impossible signature rather than panic all the same.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(canonical_request.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The whole query string of a v2-signed call about to be made: `pairs` (the
/// caller's own parameters, in order, without any `timestamp`, `nonce` or
/// `signature` among them), then `timestamp`, `nonce` and `signature`, each
/// name and value [`percent_encode`]d. `path` is the request path as it will
/// be sent (percent-encoded, no query); `timestamp` Unix seconds in decimal;
/// `nonce` a fresh [`is_v2_nonce`] (see [`nonce_v2`]).
pub fn signed_query_v2(
    token: &str,
    method: &str,
    path: &str,
    pairs: &[(&str, &str)],
    body: &[u8],
    timestamp: &str,
    nonce: &str,
) -> String {
    let mut all: Vec<(&str, &str)> = pairs.iter().copied().filter(|(k, _)| !SIGNING_PARAMS.contains(k)).collect();
    all.push(("timestamp", timestamp));
    all.push(("nonce", nonce));
    let canonical = canonical_request(
        method,
        path,
        &canonical_query(all.iter().map(|&(k, v)| (k, v))),
        &body_digest(body),
        timestamp,
        nonce,
    );
    let signature = signature_v2(token, &canonical);
    all.push(("signature", &signature));
    let mut out = String::new();
    for (k, v) in all {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(k.as_bytes()));
        out.push('=');
        out.push_str(&percent_encode(v.as_bytes()));
    }
    out
}

/// The whole query string of a v1-signed call, for gateways older than v2
/// signatures: `pairs` (without `timestamp`, `nonce`, `signature`), then the
/// three, each name and value [`percent_encode`]d.
pub fn signed_query_v1(token: &str, pairs: &[(&str, &str)], timestamp: &str, nonce: &str) -> String {
    let sig = signature(token, timestamp, nonce);
    let mut out = String::new();
    let all = pairs.iter().copied().filter(|(k, _)| !SIGNING_PARAMS.contains(k));
    for (k, v) in all.chain([("timestamp", timestamp), ("nonce", nonce), ("signature", sig.as_str())]) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(k.as_bytes()));
        out.push('=');
        out.push_str(&percent_encode(v.as_bytes()));
    }
    out
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
        assert_eq!(expected, "644467a57b75f3dc04b7024ea01e2f3befa3dd02", "docs/protocol.md §7.1");
        assert_ne!(signature("qwe123", "1700000000", "4243"), expected);
    }

    const CANONICAL_QUERY: &str = "channel=room%201&msgtype=1001&nonce=4f9c2a1b7d3e6a5c&qos=1&timestamp=1700000000";
    const DIGEST: &str = "2bfd14f43d17fc7cea24e0917a8879b4b2f880b8baeec1b9d90fbaad655e71bd";
    const SIGNATURE: &str = "4855ef57fa5d2bbb0f52dc09ffb98820947442c1bb48ecdbe20e61b5b7d7d2bc";

    /// The test vector of docs/protocol.md §7.4, every step of it.
    #[test]
    fn v2_test_vector() {
        for raw in [
            "channel=room%201&msgtype=1001&qos=1&timestamp=1700000000&nonce=4f9c2a1b7d3e6a5c&signature=x",
            "signature=y&nonce=4f9c2a1b7d3e6a5c&timestamp=1700000000&qos=1&msgtype=1001&channel=room+1",
        ] {
            assert_eq!(canonical_query_of(raw), CANONICAL_QUERY, "{raw}");
        }
        assert_eq!(body_digest(br#"{"n":1}"#), DIGEST);
        let canonical = canonical_request("POST", "/send/", CANONICAL_QUERY, DIGEST, "1700000000", "4f9c2a1b7d3e6a5c");
        assert_eq!(
            canonical,
            format!("RAINBOW-HMAC-SHA256\nPOST\n/send/\n{CANONICAL_QUERY}\n{DIGEST}\n1700000000\n4f9c2a1b7d3e6a5c")
        );
        assert_eq!(signature_v2("qwe123", &canonical), SIGNATURE);
        let query = signed_query_v2(
            "qwe123",
            "POST",
            "/send/",
            &[("channel", "room 1"), ("msgtype", "1001"), ("qos", "1")],
            br#"{"n":1}"#,
            "1700000000",
            "4f9c2a1b7d3e6a5c",
        );
        assert_eq!(
            query,
            format!(
                "channel=room%201&msgtype=1001&qos=1&timestamp=1700000000&nonce=4f9c2a1b7d3e6a5c&signature={SIGNATURE}"
            )
        );
        assert_eq!(Version::of(SIGNATURE), Some(Version::V2));
        assert_eq!(Version::of(&signature("qwe123", "1", "2")), Some(Version::V1));
        assert_eq!(Version::of("abc"), None);
    }

    #[test]
    fn every_part_of_the_request_is_bound() {
        let base = ("POST", "/send/", CANONICAL_QUERY, DIGEST, "1700000000", "4f9c2a1b7d3e6a5c");
        let sign = |(m, p, q, d, t, n): (&str, &str, &str, &str, &str, &str)| {
            signature_v2("qwe123", &canonical_request(m, p, q, d, t, n))
        };
        assert_eq!(sign(base), SIGNATURE);
        let other_query = CANONICAL_QUERY.replace("room%201", "room%202");
        let other_digest = body_digest(b"{}");
        for changed in [
            ("GET", base.1, base.2, base.3, base.4, base.5),
            (base.0, "/sub/", base.2, base.3, base.4, base.5),
            (base.0, base.1, other_query.as_str(), base.3, base.4, base.5),
            (base.0, base.1, base.2, other_digest.as_str(), base.4, base.5),
            (base.0, base.1, base.2, base.3, "1700000001", base.5),
            (base.0, base.1, base.2, base.3, base.4, "4f9c2a1b7d3e6a5d"),
        ] {
            assert_ne!(sign(changed), SIGNATURE, "{changed:?}");
        }
        assert_ne!(signature_v2("qwe124", "x"), signature_v2("qwe123", "x"));
    }

    #[test]
    fn canonical_query_encoding_and_order() {
        // Reserved and non-ASCII bytes are %XX upper case; `~` is not; a
        // malformed escape stays literal and is then encoded.
        assert_eq!(canonical_query_of("b=%7e%2f&a=%C3%A9&c=50%&d"), "a=%C3%A9&b=~%2F&c=50%25&d=");
        // Sorted by encoded name, then encoded value; duplicates are all kept.
        assert_eq!(canonical_query_of("x=2&x=10&X=1&signature=s&signature=t"), "X=1&x=10&x=2");
        assert_eq!(canonical_query_of(""), "");
        assert_eq!(canonical_query_of("&&a=1&&"), "a=1");
        // Encoded names sort byte-wise, so `%` escapes come before letters.
        assert_eq!(canonical_query_of("a=1&%20=2"), "%20=2&a=1");
        // Bytes that are not UTF-8 survive.
        assert_eq!(form_decode(b"%FF%fe+%zz%"), vec![0xff, 0xfe, b' ', b'%', b'z', b'z', b'%']);
        assert_eq!(percent_encode("a b+c/é~".as_bytes()), "a%20b%2Bc%2F%C3%A9~");
    }

    #[test]
    fn v2_nonces() {
        for good in ["a", "4f9c2a1b7d3e6a5c", "A-z_09", &"x".repeat(64)] {
            assert!(is_v2_nonce(good), "{good}");
        }
        for bad in ["", " 1", "a.b", "a+b", "é", &"x".repeat(65)] {
            assert!(!is_v2_nonce(bad), "{bad}");
        }
        assert_eq!(nonce_v2(0x4f9c_2a1b_7d3e_6a5c), "4f9c2a1b7d3e6a5c");
        assert_eq!(nonce_v2(1), "0000000000000001");
    }

    #[test]
    fn v1_queries_and_reserved_pairs() {
        let q = signed_query_v1("qwe123", &[("channel", "a b"), ("nonce", "9")], "1700000000", "4242");
        assert_eq!(
            q,
            "channel=a%20b&timestamp=1700000000&nonce=4242&signature=644467a57b75f3dc04b7024ea01e2f3befa3dd02"
        );
        let q = signed_query_v2("t", "GET", "/worker/", &[("signature", "old"), ("name", "w")], b"", "5", "n");
        assert!(q.starts_with("name=w&timestamp=5&nonce=n&signature="), "{q}");
        assert_eq!(q.matches("signature=").count(), 1);
    }
}
