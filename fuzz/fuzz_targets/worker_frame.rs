//! Fuzzes the worker frame codec with arbitrary bytes from a worker: splitting
//! and parsing must never panic, and any frame that splits must survive an
//! encode/split round trip with the same header and body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rainbow_gateway::worker::frame::{FromWorker, encode, split};

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = split(Bytes::copy_from_slice(data)) {
        let again = split(encode(&raw.header, &raw.body)).expect("an encoded frame splits");
        assert_eq!(again, raw);
        let _ = FromWorker::parse(raw);
    }
});
