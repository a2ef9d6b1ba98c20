//! The frame envelope of docs/worker-protocol.md §2: a `u32` big-endian
//! header length, a JSON object header with an `op`, then the body.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

/// Encodes a header and a body into one frame.
pub(crate) fn encode(header: &Map<String, Value>, body: &[u8]) -> Bytes {
    // Serializing a map of JSON values cannot fail (keys are strings).
    let json = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = BytesMut::with_capacity(4 + json.len() + body.len());
    out.put_u32(u32::try_from(json.len()).unwrap_or(u32::MAX));
    out.put_slice(&json);
    out.put_slice(body);
    out.freeze()
}

/// Splits a frame into its header object and body.
pub(crate) fn split(frame: Bytes) -> Result<(Map<String, Value>, Bytes), String> {
    let Some(prefix) = frame.get(..4) else {
        return Err(format!("frame of {} bytes has no header length", frame.len()));
    };
    // `get(..4)` returned exactly four bytes, so these indexes are in bounds.
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let end = usize::try_from(len).ok().and_then(|l| l.checked_add(4)).filter(|e| *e <= frame.len());
    let Some(end) = end else {
        return Err(format!("header length {len} runs past the {}-byte frame", frame.len()));
    };
    match serde_json::from_slice::<Value>(&frame[4..end]) {
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
