//! The frame envelope of docs/worker-protocol.md §2: a `u32` big-endian
//! header length, a JSON object header with an `op`, then the body. The
//! length prefix is `rainbow_protocol::envelope`, shared with the gateway.

use bytes::Bytes;
use rainbow_protocol::envelope;
use serde_json::{Map, Value};

/// Encodes a header and a body into one frame.
pub(crate) fn encode(header: &Map<String, Value>, body: &[u8]) -> Bytes {
    // Serializing a map of JSON values cannot fail (keys are strings).
    let json = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    Bytes::from(envelope::encode(&json, body))
}

/// Splits a frame into its header object and body.
pub(crate) fn split(frame: Bytes) -> Result<(Map<String, Value>, Bytes), String> {
    let header = envelope::decode(&frame).map_err(|e| e.to_string())?.0;
    let end = envelope::PREFIX_LEN + header.len();
    match serde_json::from_slice::<Value>(header) {
        Ok(Value::Object(header)) => Ok((header, frame.slice(end..))),
        Ok(_) => Err("header is not a JSON object".into()),
        Err(e) => Err(format!("header is not JSON: {e}")),
    }
}

/// A header object from a `json!` literal.
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_errors() {
        let header = object(json!({"op": "reply", "task": 3}));
        let (h, body) = split(encode(&header, b"abc")).unwrap();
        assert_eq!((h, &body[..]), (header, &b"abc"[..]));
        assert!(split(Bytes::from_static(b"\0\0")).is_err());
        assert!(split(Bytes::from_static(b"\0\0\0\x05{}")).is_err());
        assert!(split(Bytes::from_static(b"\0\0\0\x02[]")).is_err());
    }
}
