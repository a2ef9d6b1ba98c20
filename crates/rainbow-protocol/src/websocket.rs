//! WebSocket framing (RFC 6455 §5), server side, with no IO.
//!
//! The gateway reads a client's socket itself (see its `transport` module) so
//! that an idle connection holds no buffer; this module turns the bytes it
//! read into messages and encodes the frames it writes.
//!
//! - [`Decoder`] takes client bytes from the start of a buffer, one frame at a
//!   time: [`Decoded::Incomplete`] says how many bytes the frame needs in
//!   total, [`Decoded::Frame`] how many it consumed and the message it
//!   completed, if any. It unmasks in place, reassembles fragmented messages
//!   (bounded by the message limit), answers nothing by itself and keeps no
//!   buffer except the fragments of an unfinished message.
//! - [`encode`] and [`encode_close`] append a server frame (unmasked, FIN set).
//!
//! Refusals are typed ([`FrameError`]) and map to close codes: 1002 for
//! protocol violations (reserved bits, unknown opcodes, unmasked client
//! frames, bad control frames, broken fragmentation, invalid close codes),
//! 1009 for messages over the limit, 1007 for text that is not UTF-8.

use bytes::Bytes;
use thiserror::Error;

/// Longest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, a 64-bit length, a mask.
pub const MAX_HEADER: usize = 14;

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// A further fragment of a data message (0).
    Continuation = 0,
    /// A text message, UTF-8 (1).
    Text = 1,
    /// A binary message (2).
    Binary = 2,
    /// Close (8).
    Close = 8,
    /// Ping (9).
    Ping = 9,
    /// Pong (10).
    Pong = 10,
}

impl OpCode {
    /// The opcode of a header nibble, or `None` for the reserved ones.
    pub fn from_u8(nibble: u8) -> Option<OpCode> {
        match nibble {
            0 => Some(OpCode::Continuation),
            1 => Some(OpCode::Text),
            2 => Some(OpCode::Binary),
            8 => Some(OpCode::Close),
            9 => Some(OpCode::Ping),
            10 => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        self as u8 >= 8
    }
}

/// Whether a peer may send this close code (RFC 6455 §7.4; 1004–1006 and
/// 1015 are never sent, 1016–2999 are unassigned, 3000–4999 are for
/// registered and private use).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A message completed by a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text or binary message, reassembled if it was fragmented. Text was
    /// checked to be UTF-8.
    Data {
        /// Whether it was sent as text.
        text: bool,
        /// The payload.
        payload: Bytes,
    },
    /// A ping with its payload (at most 125 bytes), to be answered by a pong
    /// carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: the code and reason, if the frame had any.
    Close(Option<(u16, String)>),
}

/// Client bytes that break the framing rules. Each has a close code
/// ([`FrameError::close_code`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1–3 set, with no extension negotiated.
    #[error("reserved bits set in a frame header")]
    ReservedBits,
    /// A reserved opcode (3–7, 11–15).
    #[error("reserved opcode {0}")]
    UnknownOpcode(u8),
    /// A client frame without a mask.
    #[error("unmasked frame from a client")]
    Unmasked,
    /// A 64-bit length with its most significant bit set.
    #[error("invalid 64-bit frame length")]
    InvalidLength,
    /// A close, ping or pong frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame payload longer than 125 bytes.
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    /// A continuation frame with no fragmented message to continue.
    #[error("continuation frame with no message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    #[error("new data frame before the fragmented message ended")]
    ExpectedContinuation,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// A close code a peer may not send.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A message larger than the limit.
    #[error("message of {size} bytes or more, over the limit of {max}")]
    TooBig {
        /// The message size known so far (at least this big).
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A text message (or close reason) that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
}

impl FrameError {
    /// The close code answering this error: 1009 for a message over the
    /// limit, 1007 for invalid UTF-8, 1002 for everything else.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooBig { .. } => 1009,
            FrameError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// What [`Decoder::decode`] found at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// No whole frame yet: the frame needs `needed` bytes in total, counted
    /// from the start of the buffer (more than it holds). While the header is
    /// incomplete this is only the header's length so far.
    Incomplete {
        /// Bytes the next frame needs, from the start of the buffer.
        needed: usize,
    },
    /// A frame of `consumed` bytes was taken from the start of the buffer.
    /// `message` is what it completed: `None` for a fragment of an unfinished
    /// message.
    Frame {
        /// Length of the frame, header included.
        consumed: usize,
        /// The message it completed, if any.
        message: Option<Message>,
    },
}

/// A parsed client frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key.
    pub mask: [u8; 4],
    /// Payload length.
    pub len: u64,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

impl FrameHeader {
    /// Parses a client (masked) frame header from the start of `buf`.
    /// `Ok(Err(needed))` when `buf` is shorter than the header: at least
    /// `needed` bytes are required.
    pub fn parse(buf: &[u8]) -> Result<Result<FrameHeader, usize>, FrameError> {
        let Some(&b0) = buf.first() else { return Ok(Err(2)) };
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        let Some(&b1) = buf.get(1) else { return Ok(Err(2)) };
        if b1 & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        let (extended, header_len) = match b1 & 0x7F {
            126 => (2, 8),
            127 => (8, 14),
            _ => (0, 6),
        };
        if buf.len() < header_len {
            return Ok(Err(header_len));
        }
        let len = match extended {
            2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            8 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                u64::from_be_bytes(be)
            }
            _ => u64::from(b1 & 0x7F),
        };
        if len >> 63 != 0 {
            return Err(FrameError::InvalidLength);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[header_len - 4..header_len]);
        Ok(Ok(FrameHeader { fin: b0 & 0x80 != 0, opcode, mask, len, header_len }))
    }
}

/// Applies (or removes: it is its own inverse) a masking key, for a payload
/// starting at offset 0 of the frame's payload.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragments {
    text: bool,
    data: Vec<u8>,
}

/// Turns a client's bytes into messages (see the module documentation).
///
/// Its only state is the limit and the fragments of an unfinished message,
/// which are allocated only while a fragmented message arrives.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    fragments: Option<Box<Fragments>>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes (1009).
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max_message, fragments: None }
    }

    /// Whether a fragmented message is unfinished.
    pub fn in_message(&self) -> bool {
        self.fragments.is_some()
    }

    /// Decodes the frame at the start of `buf` (unmasking it in place).
    ///
    /// Header errors are reported as soon as the header is whole, before its
    /// payload arrives, so an oversized message is refused without buffering
    /// it. After an error the decoder must not be used again.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, FrameError> {
        let header = match FrameHeader::parse(buf)? {
            Ok(header) => header,
            Err(needed) => return Ok(Decoded::Incomplete { needed }),
        };
        self.check(&header)?;
        // `check` bounded the length by the message limit or 125.
        let len = usize::try_from(header.len).map_err(|_| self.too_big(header.len))?;
        let end = header.header_len + len;
        if buf.len() < end {
            return Ok(Decoded::Incomplete { needed: end });
        }
        let payload = &mut buf[header.header_len..end];
        apply_mask(payload, header.mask);
        let message = self.complete(header.fin, header.opcode, payload)?;
        Ok(Decoded::Frame { consumed: end, message })
    }

    fn too_big(&self, size: u64) -> FrameError {
        FrameError::TooBig { size, max: self.max_message }
    }

    /// The rules a header can be checked against before its payload.
    fn check(&self, h: &FrameHeader) -> Result<(), FrameError> {
        if h.opcode.is_control() {
            if !h.fin {
                return Err(FrameError::FragmentedControl);
            }
            if h.len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(FrameError::ControlTooLong(h.len));
            }
            return Ok(());
        }
        let so_far = match (h.opcode, &self.fragments) {
            (OpCode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
            (OpCode::Continuation, Some(f)) => f.data.len() as u64,
            (_, Some(_)) => return Err(FrameError::ExpectedContinuation),
            (_, None) => 0,
        };
        let size = so_far.saturating_add(h.len);
        if size > self.max_message as u64 {
            return Err(self.too_big(size));
        }
        Ok(())
    }

    fn complete(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) -> Result<Option<Message>, FrameError> {
        let message = match opcode {
            OpCode::Ping => Message::Ping(Bytes::copy_from_slice(payload)),
            OpCode::Pong => Message::Pong(Bytes::copy_from_slice(payload)),
            OpCode::Close => Message::Close(close_payload(payload)?),
            OpCode::Text | OpCode::Binary if fin => data(opcode == OpCode::Text, Bytes::copy_from_slice(payload))?,
            OpCode::Text | OpCode::Binary => {
                let text = opcode == OpCode::Text;
                self.fragments = Some(Box::new(Fragments { text, data: payload.to_vec() }));
                return Ok(None);
            }
            OpCode::Continuation => {
                // `check` refused a continuation without fragments.
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                fragments.data.extend_from_slice(payload);
                if !fin {
                    return Ok(None);
                }
                let Some(done) = self.fragments.take() else { return Ok(None) };
                let Fragments { text, data: bytes } = *done;
                data(text, Bytes::from(bytes))?
            }
        };
        Ok(Some(message))
    }
}

fn data(text: bool, payload: Bytes) -> Result<Message, FrameError> {
    if text && std::str::from_utf8(&payload).is_err() {
        return Err(FrameError::InvalidUtf8);
    }
    Ok(Message::Data { text, payload })
}

fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(FrameError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

/// Writes a server frame header (FIN set, no mask) for a payload of `len`
/// bytes into `out` and returns its length (2, 4 or 10).
pub fn encode_header(opcode: OpCode, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | opcode as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends a whole server frame (FIN set, unmasked) to `out`.
pub fn encode(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; MAX_HEADER];
    let n = encode_header(opcode, payload.len(), &mut header);
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to the 123 bytes a
/// control frame leaves, at a character boundary) to `out`.
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode(OpCode::Close, &payload[..2 + cut], out);
}

/// Appends a client frame (masked with `mask`) to `out`: what a browser
/// sends. For tests, fuzzing and benchmarks.
pub fn encode_masked(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let mut header = [0u8; MAX_HEADER];
    let n = encode_header(opcode, payload.len(), &mut header);
    if !fin {
        header[0] &= 0x7F;
    }
    header[1] |= 0x80;
    header[n..n + 4].copy_from_slice(&mask);
    out.extend_from_slice(&header[..n + 4]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_masked(fin, opcode, payload, MASK, &mut out);
        out
    }

    fn decode_one(d: &mut Decoder, mut bytes: Vec<u8>) -> Result<Decoded, FrameError> {
        d.decode(&mut bytes)
    }

    #[test]
    fn decodes_the_rfc_examples() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut hello = *b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        let got = Decoder::new(1024).decode(&mut hello).unwrap();
        let message = Message::Data { text: true, payload: Bytes::from_static(b"Hello") };
        assert_eq!(got, Decoded::Frame { consumed: 11, message: Some(message) });
        // Unmasked frames are the server's: refused from a client.
        let mut unmasked = *b"\x81\x05\x48\x65\x6c\x6c\x6f";
        assert_eq!(Decoder::new(1024).decode(&mut unmasked), Err(FrameError::Unmasked));
        // A server frame encodes as the RFC's unmasked example.
        let mut out = Vec::new();
        encode(OpCode::Text, b"Hello", &mut out);
        assert_eq!(out, b"\x81\x05\x48\x65\x6c\x6c\x6f");
    }

    #[test]
    fn encodes_7_16_and_64_bit_lengths() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode(OpCode::Binary, &vec![7; len], &mut out);
            assert_eq!(out.len(), header + len);
            let mut masked = frame(true, OpCode::Binary, &vec![7; len]);
            let h = FrameHeader::parse(&masked).unwrap().unwrap();
            assert_eq!((h.len, h.header_len), (len as u64, header + 4));
            let got = Decoder::new(1 << 20).decode(&mut masked).unwrap();
            let message = Message::Data { text: false, payload: Bytes::from(vec![7; len]) };
            assert_eq!(got, Decoded::Frame { consumed: header + 4 + len, message: Some(message) });
        }
    }

    #[test]
    fn reports_how_much_an_incomplete_frame_needs() {
        let whole = frame(true, OpCode::Binary, &[1; 300]);
        let mut d = Decoder::new(1024);
        assert_eq!(d.decode(&mut []).unwrap(), Decoded::Incomplete { needed: 2 });
        assert_eq!(d.decode(&mut whole[..1].to_vec()).unwrap(), Decoded::Incomplete { needed: 2 });
        assert_eq!(d.decode(&mut whole[..3].to_vec()).unwrap(), Decoded::Incomplete { needed: 8 });
        assert_eq!(d.decode(&mut whole[..8].to_vec()).unwrap(), Decoded::Incomplete { needed: 308 });
        assert_eq!(d.decode(&mut whole[..307].to_vec()).unwrap(), Decoded::Incomplete { needed: 308 });
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let err = |bytes: Vec<u8>| decode_one(&mut Decoder::new(1024), bytes).unwrap_err();
        let mut rsv = frame(true, OpCode::Binary, b"x");
        rsv[0] |= 0x40;
        assert_eq!(err(rsv), FrameError::ReservedBits);
        let mut reserved = frame(true, OpCode::Binary, b"x");
        reserved[0] = 0x83;
        assert_eq!(err(reserved), FrameError::UnknownOpcode(3));
        assert_eq!(err(frame(false, OpCode::Ping, b"")), FrameError::FragmentedControl);
        assert_eq!(err(frame(true, OpCode::Ping, &[0; 126])), FrameError::ControlTooLong(126));
        assert_eq!(err(frame(true, OpCode::Continuation, b"x")), FrameError::UnexpectedContinuation);
        assert_eq!(err(frame(true, OpCode::Close, b"\x03")), FrameError::InvalidClosePayload);
        assert_eq!(err(frame(true, OpCode::Close, b"\x03\xed")), FrameError::InvalidCloseCode(1005));
        assert_eq!(err(frame(true, OpCode::Close, b"\x03\xe8\xff")), FrameError::InvalidUtf8);
        assert_eq!(err(frame(true, OpCode::Text, b"\xc3\x28")), FrameError::InvalidUtf8);
        let mut huge = frame(true, OpCode::Binary, b"");
        huge[1] = 0xFF;
        huge.splice(2..2, [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(err(huge), FrameError::InvalidLength);
        // Over the limit: refused from the header alone.
        let big = frame(true, OpCode::Binary, &[0; 2000]);
        assert_eq!(err(big[..8].to_vec()), FrameError::TooBig { size: 2000, max: 1024 });
        let codes: Vec<u16> = [FrameError::TooBig { size: 1, max: 0 }, FrameError::InvalidUtf8, FrameError::Unmasked]
            .iter()
            .map(FrameError::close_code)
            .collect();
        assert_eq!(codes, [1009, 1007, 1002]);
    }

    #[test]
    fn reassembles_fragments_around_control_frames_within_the_limit() {
        let mut d = Decoder::new(10);
        let fragment = |d: &mut Decoder, bytes| match decode_one(d, bytes) {
            Ok(Decoded::Frame { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(fragment(&mut d, frame(false, OpCode::Text, "hé".as_bytes())), None);
        assert!(d.in_message());
        assert_eq!(fragment(&mut d, frame(true, OpCode::Ping, b"p")), Some(Message::Ping(Bytes::from_static(b"p"))));
        assert_eq!(decode_one(&mut d, frame(true, OpCode::Binary, b"x")), Err(FrameError::ExpectedContinuation));
        assert_eq!(fragment(&mut d, frame(false, OpCode::Continuation, b"llo")), None);
        let done = fragment(&mut d, frame(true, OpCode::Continuation, b"!"));
        assert_eq!(done, Some(Message::Data { text: true, payload: Bytes::from("héllo!") }));
        assert!(!d.in_message());
        // The limit counts the whole message, not each frame.
        assert_eq!(fragment(&mut d, frame(false, OpCode::Binary, &[0; 6])), None);
        let over = decode_one(&mut d, frame(true, OpCode::Continuation, &[0; 5]));
        assert_eq!(over, Err(FrameError::TooBig { size: 11, max: 10 }));
        // A close frame's code and reason.
        let close = fragment(&mut Decoder::new(10), frame(true, OpCode::Close, b"\x03\xe8bye"));
        assert_eq!(close, Some(Message::Close(Some((1000, "bye".into())))));
    }

    #[test]
    fn close_frames_carry_at_most_125_bytes() {
        let mut out = Vec::new();
        encode_close(1001, &"é".repeat(100), &mut out);
        // 2 header bytes, the code, and 122 of the 123 reason bytes left: a
        // two-byte character does not fit in the last one.
        assert_eq!(out.len(), 2 + 2 + 122);
        assert_eq!(&out[..4], b"\x88\x7c\x03\xe9");
        let mut short = Vec::new();
        encode_close(1000, "bye", &mut short);
        assert_eq!(short, b"\x88\x05\x03\xe8bye");
    }

    /// A message as a client sends it: fragments (each FIN unless last).
    fn arb_message() -> impl Strategy<Value = (bool, Vec<Vec<u8>>)> {
        (any::<bool>(), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4)).prop_map(
            |(text, parts)| {
                if text {
                    // Text must be UTF-8: use ASCII.
                    (true, parts.into_iter().map(|p| p.into_iter().map(|b| b & 0x7F).collect()).collect())
                } else {
                    (false, parts)
                }
            },
        )
    }

    /// Feeds `wire` in pieces as the gateway does: decode what is whole,
    /// keep the rest.
    fn feed(d: &mut Decoder, wire: &[u8], cuts: &[usize]) -> Result<Vec<Message>, FrameError> {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        for cut in cuts {
            pending.extend_from_slice(&wire[at..cut.max(at)]);
            at = cut.max(at);
            loop {
                match d.decode(&mut pending)? {
                    Decoded::Incomplete { needed } => {
                        assert!(needed > pending.len());
                        break;
                    }
                    Decoded::Frame { consumed, message } => {
                        assert!(consumed <= pending.len());
                        pending.drain(..consumed);
                        out.extend(message);
                    }
                }
            }
        }
        assert!(pending.is_empty());
        Ok(out)
    }

    proptest! {
        #[test]
        fn decodes_any_split_of_any_message_sequence(
            messages in proptest::collection::vec(arb_message(), 0..6),
            masks in proptest::collection::vec(any::<[u8; 4]>(), 1..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, (text, parts)) in messages.iter().enumerate() {
                let data = Message::Data { text: *text, payload: Bytes::from(parts.concat()) };
                let ping = Message::Ping(Bytes::from_static(b"hi"));
                for (j, part) in parts.iter().enumerate() {
                    let opcode = match (j, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    encode_masked(j + 1 == parts.len(), opcode, part, masks[(i + j) % masks.len()], &mut wire);
                    if j == 0 && i % 2 == 1 {
                        // A ping after the first frame: inside the message
                        // when it has more fragments, after it otherwise.
                        encode_masked(true, OpCode::Ping, b"hi", masks[0], &mut wire);
                        if parts.len() == 1 {
                            expected.push(data.clone());
                        }
                        expected.push(ping.clone());
                    }
                }
                if !(i % 2 == 1 && parts.len() == 1) {
                    expected.push(data);
                }
            }
            let got = feed(&mut Decoder::new(4096), &wire, &cuts).unwrap();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn never_panics_and_never_overreaches(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
            max in 0usize..300,
        ) {
            let mut d = Decoder::new(max);
            let mut pending = Vec::new();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut at = 0;
            'feed: for cut in cuts {
                pending.extend_from_slice(&bytes[at..cut.max(at)]);
                at = cut.max(at);
                loop {
                    match d.decode(&mut pending) {
                        Err(_) => break 'feed,
                        Ok(Decoded::Incomplete { needed }) => {
                            prop_assert!(needed > pending.len());
                            prop_assert!(needed <= MAX_HEADER + max.max(MAX_CONTROL_PAYLOAD));
                            break;
                        }
                        Ok(Decoded::Frame { consumed, message }) => {
                            prop_assert!(consumed > 0 && consumed <= pending.len());
                            if let Some(Message::Data { payload, .. }) = &message {
                                prop_assert!(payload.len() <= max);
                            }
                            pending.drain(..consumed);
                        }
                    }
                }
            }
        }
    }
}
