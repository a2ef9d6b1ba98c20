//! Fuzzes the QoS state machines with an arbitrary peer: decoded packets from
//! the fuzzer drive `Inbound` and `Outbound` as the gateway's driver does,
//! interleaved with sends and clock ticks. Nothing may panic, and the
//! in-flight and unreleased counts must stay within their bounds.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rainbow_protocol::{Inbound, InboundConfig, Outbound, OutboundConfig, Packet, Qos};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut out: Outbound<u32> = Outbound::new(OutboundConfig { max_in_flight: 8, ..Default::default() });
    let mut inb = Inbound::new(InboundConfig { max_unreleased: 8, max_age: Duration::from_secs(5) });
    let mut tag = 0u32;
    for chunk in data.chunks(4) {
        match chunk[0] % 4 {
            0 => {
                tag += 1;
                let qos = Qos::from_u8(chunk.get(1).copied().unwrap_or(0) % 3).unwrap_or(Qos::AtMostOnce);
                let _ = out.send(now, 1, qos, Bytes::new(), now + Duration::from_secs(10), tag);
            }
            1 => now += Duration::from_millis(u64::from(chunk.get(1).copied().unwrap_or(0)) * 50),
            _ => {
                let Ok(packet) = Packet::decode(Bytes::copy_from_slice(&chunk[1..])) else { continue };
                match packet {
                    Packet::Send(s) => {
                        if let Ok(rainbow_protocol::Disposition::Process) = inb.on_send(now, &s) {
                            let _ = inb.answer(s.id, s.qos, Bytes::new());
                        }
                    }
                    Packet::Ack(r) => {
                        let _ = out.on_ack(r.id, r.payload);
                    }
                    Packet::Rec(r) => {
                        let _ = out.on_rec(now, r.id, r.payload);
                    }
                    Packet::Rel(id) => {
                        let _ = inb.on_rel(id);
                    }
                    Packet::Com(id) => out.on_com(id),
                }
            }
        }
        out.on_timeout(now, |_| {});
        assert!(out.in_flight() <= 8);
        assert!(inb.unreleased() <= 8);
    }
});
