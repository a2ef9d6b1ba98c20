//! The envelope of the gateway's internal messages: a JSON header and a raw
//! body in one byte string, so payloads travel without base64.
//!
//! ```text
//! +-----------------------+---------------------+------------------+
//! | header length: u32 BE | header (JSON bytes) | body (raw bytes) |
//! +-----------------------+---------------------+------------------+
//! ```
//!
//! Used between cluster nodes over Redis and between the gateway and its
//! workers (`docs/worker-protocol.md`). This module only splits and joins the
//! bytes; what the header means belongs to its users.

use thiserror::Error;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// An envelope that does not split.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer than 4 bytes: no header length.
    #[error("envelope shorter than its 4-byte header length")]
    Short,
    /// The header length points past the end of the envelope.
    #[error("header length {header} exceeds the {available} bytes after the prefix")]
    HeaderOverrun {
        /// Declared header length.
        header: usize,
        /// Bytes available after the prefix.
        available: usize,
    },
}

/// Joins `header` and `body` into one envelope.
pub fn encode(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + body.len());
    // Headers are small JSON objects; a header over 4 GiB cannot be built in
    // memory next to its copy here, so the conversion saturates harmlessly.
    out.extend_from_slice(&u32::try_from(header.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// Splits an envelope into its header and body.
pub fn decode(envelope: &[u8]) -> Result<(&[u8], &[u8]), EnvelopeError> {
    let Some((prefix, rest)) = envelope.split_first_chunk::<PREFIX_LEN>() else {
        return Err(EnvelopeError::Short);
    };
    let header = u32::from_be_bytes(*prefix) as usize;
    if header > rest.len() {
        return Err(EnvelopeError::HeaderOverrun { header, available: rest.len() });
    }
    Ok(rest.split_at(header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_what_it_joins() {
        let e = encode(br#"{"op":"x"}"#, b"\x00body");
        assert_eq!(&e[..4], &[0, 0, 0, 10]);
        assert_eq!(decode(&e), Ok((&br#"{"op":"x"}"#[..], &b"\x00body"[..])));
        assert_eq!(decode(&encode(b"", b"")), Ok((&b""[..], &b""[..])));
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert_eq!(decode(b"\x00\x00"), Err(EnvelopeError::Short));
        assert_eq!(decode(b"\x00\x00\x00\x09{}"), Err(EnvelopeError::HeaderOverrun { header: 9, available: 2 }));
        assert!(decode(b"\xff\xff\xff\xff").is_err());
    }

    proptest! {
        #[test]
        fn round_trip(header in proptest::collection::vec(any::<u8>(), 0..64), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let e = encode(&header, &body);
            prop_assert_eq!(decode(&e), Ok((&header[..], &body[..])));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
