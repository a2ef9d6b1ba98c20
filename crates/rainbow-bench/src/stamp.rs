//! Stamped payloads: what the fan-out publisher sends and subscribers time.
//!
//! A payload is one line of JSON text, so it reaches Rainbow subscribers
//! inside a SEND packet and Nchan or Pushpin subscribers as a plain text
//! frame, unchanged:
//!
//! ```text
//! {"seq":17,"step":2,"ts":1763719200123456,"pad":"xxxx"}
//! ```
//!
//! - `seq`: the publication's number in the run, from 1;
//! - `step`: the rate step it belongs to (0 = warm-up);
//! - `ts`: Unix time in microseconds when the publisher sent it (the wall
//!   clock, which every process on the machine shares);
//! - `pad`: filler up to the requested payload size.
//!
//! Subscribers parse it with [`parse`], which reads the three numbers in
//! their fixed order without a JSON parser (it runs once per delivery).

use std::time::{SystemTime, UNIX_EPOCH};

/// Largest payload [`encode`] pads to, bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What a payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Publication number, from 1.
    pub seq: u64,
    /// Rate step (0 = warm-up).
    pub step: u32,
    /// Send time, Unix microseconds.
    pub ts_us: u64,
}

/// Unix time now, microseconds (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The payload of `stamp`, padded with `x` up to `size` bytes when `size`
/// is larger than the bare stamp (at most [`MAX_PAYLOAD`]).
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut text = format!("{{\"seq\":{},\"step\":{},\"ts\":{}", stamp.seq, stamp.step, stamp.ts_us);
    // `,"pad":""}` is 10 bytes.
    let size = size.min(MAX_PAYLOAD);
    if size > text.len() + 10 {
        let fill = size - text.len() - 10;
        text.push_str(",\"pad\":\"");
        text.extend(std::iter::repeat_n('x', fill));
        text.push_str("\"}");
    } else {
        text.push('}');
    }
    text
}

/// Reads the unsigned decimal after `key` at the start of `rest`; returns it
/// and what follows.
fn number_after<'a>(rest: &'a [u8], key: &[u8]) -> Option<(u64, &'a [u8])> {
    let rest = rest.strip_prefix(key)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &rest[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &rest[digits..]))
}

/// The stamp of a payload made by [`encode`], or `None` for anything else.
pub fn parse(payload: &[u8]) -> Option<Stamp> {
    let (seq, rest) = number_after(payload, b"{\"seq\":")?;
    let (step, rest) = number_after(rest, b",\"step\":")?;
    let (ts_us, rest) = number_after(rest, b",\"ts\":")?;
    if !matches!(rest.first(), Some(b'}' | b',')) {
        return None;
    }
    Some(Stamp { seq, step: u32::try_from(step).ok()?, ts_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp { seq: 17, step: 2, ts_us: 1_763_719_200_123_456 };

    #[test]
    fn round_trips_and_is_json() {
        for size in [0, 10, 60, 61, 62, 200, 4096] {
            let text = encode(STAMP, size);
            assert_eq!(parse(text.as_bytes()), Some(STAMP), "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(v["seq"], 17);
            assert_eq!(v["ts"], 1_763_719_200_123_456u64);
            if size > 60 {
                assert_eq!(text.len(), size, "{text}");
            }
        }
    }

    #[test]
    fn bare_stamp_has_no_padding() {
        assert_eq!(encode(STAMP, 0), r#"{"seq":17,"step":2,"ts":1763719200123456}"#);
    }

    #[test]
    fn padding_is_capped() {
        assert_eq!(encode(STAMP, usize::MAX).len(), MAX_PAYLOAD);
    }

    #[test]
    fn rejects_other_payloads() {
        for bad in [
            &b""[..],
            b"{}",
            b"hello",
            br#"{"seq":1,"step":2}"#,
            br#"{"seq":-1,"step":2,"ts":3}"#,
            br#"{"seq":1,"step":2,"ts":3"#,
            br#"{"seq":99999999999999999999,"step":2,"ts":3}"#,
            br#"{"seq":1,"step":99999999999,"ts":3}"#,
            br#"{"step":2,"seq":1,"ts":3}"#,
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn clock_is_after_2020() {
        assert!(now_us() > 1_577_836_800_000_000);
    }
}
