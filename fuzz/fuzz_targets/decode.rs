//! Fuzzes the packet decoder with arbitrary client bytes: it must never
//! panic, and whatever it accepts must survive an encode/decode round trip.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rainbow_protocol::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(Bytes::copy_from_slice(data)) {
        let again = Packet::decode(packet.encode()).expect("an encoded packet decodes");
        assert_eq!(again, packet);
    }
});
