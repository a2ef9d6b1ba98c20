//! Fuzzes the worker protocol's frames (`rainbow_protocol::worker`) with
//! arbitrary bytes, in both directions: splitting and parsing must never
//! panic, any frame that splits must survive an encode/split round trip with
//! the same header and body, and any frame that parses as a worker's or a
//! gateway's frame must encode to bytes that parse to the same frame.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rainbow_protocol::worker::{FromWorker, ToWorker, split};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = split(Bytes::copy_from_slice(data)) else { return };
    // Exact for floats too: this crate turns on serde_json's `float_roundtrip`.
    let again = split(raw.encode()).expect("an encoded frame splits");
    assert_eq!(again, raw);
    if let Ok(frame) = FromWorker::parse(raw.clone()) {
        assert_eq!(FromWorker::decode(frame.encode()).as_ref(), Ok(&frame), "a worker frame re-encodes");
    }
    if let Ok(frame) = ToWorker::parse(raw) {
        assert_eq!(ToWorker::decode(frame.encode()).as_ref(), Ok(&frame), "a gateway frame re-encodes");
    }
});
