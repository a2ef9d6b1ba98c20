//! Fuzzes the WebSocket frame decoder with arbitrary client bytes, fed in
//! arbitrary pieces as the gateway reads them (decode what is whole, keep the
//! rest). It must never panic, never consume more than it was given, never
//! ask for fewer bytes than it already has, and never hand over a message
//! over the limit or text that is not UTF-8. A second mode encodes messages
//! from the input, fragments and masks them, and checks they decode back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rainbow_protocol::websocket::{Decoded, Decoder, MAX_CONTROL_PAYLOAD, MAX_HEADER, Message, OpCode, encode_masked};

fn feed(max: usize, wire: &[u8], piece: usize) -> Vec<Message> {
    let mut decoder = Decoder::new(max);
    let mut pending = Vec::new();
    let mut messages = Vec::new();
    for chunk in wire.chunks(piece.max(1)) {
        pending.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut pending) {
                Err(_) => return messages,
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(needed > pending.len());
                    assert!(needed <= MAX_HEADER + max.max(MAX_CONTROL_PAYLOAD));
                    break;
                }
                Ok(Decoded::Frame { consumed, message }) => {
                    assert!(consumed > 0 && consumed <= pending.len());
                    if let Some(Message::Data { text, payload }) = &message {
                        assert!(payload.len() <= max);
                        assert!(!text || std::str::from_utf8(payload).is_ok());
                    }
                    pending.drain(..consumed);
                    messages.extend(message);
                }
            }
        }
    }
    messages
}

fuzz_target!(|data: &[u8]| {
    let [mode, size, piece, rest @ ..] = data else { return };
    let max = usize::from(*size) * 4;
    if mode % 2 == 0 {
        feed(max, rest, usize::from(*piece));
        return;
    }
    // Round trip: each input byte run becomes a binary message of up to
    // `max` bytes in frames of up to `piece` bytes.
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for (i, message) in rest.chunks(max.max(1)).enumerate() {
        let frames: Vec<&[u8]> = message.chunks(usize::from(*piece).max(1)).collect();
        for (j, frame) in frames.iter().enumerate() {
            let opcode = if j == 0 { OpCode::Binary } else { OpCode::Continuation };
            let mask = [i as u8, j as u8, *mode, *piece];
            encode_masked(j + 1 == frames.len(), opcode, frame, mask, &mut wire);
        }
        sent.push(message.to_vec());
    }
    let got = feed(max.max(1), &wire, usize::from(*mode));
    let got: Vec<Vec<u8>> = got
        .into_iter()
        .map(|m| match m {
            Message::Data { text: false, payload } => payload.to_vec(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, sent);
});
