//! Connection identities: 32 random bytes, shown as 64 hex digits (spec §3).
//!
//! Stored as bytes, not a string, so each connection and each subscription
//! spends 32 bytes on it; parsed back from hex when the API names one.

use std::fmt;
use std::str::FromStr;

/// An opaque, unguessable, unique connection identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity([u8; 32]);

impl Identity {
    /// A fresh random identity (from the OS-seeded thread RNG).
    pub fn random() -> Identity {
        Identity(rand::random())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input length.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        // Hex digits are ASCII, so this is valid UTF-8.
        f.write_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// The text is not 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an identity is 64 hex digits")]
pub struct BadIdentity;

impl FromStr for Identity {
    type Err = BadIdentity;

    fn from_str(s: &str) -> Result<Identity, BadIdentity> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| BadIdentity)?;
        Ok(Identity(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let id = Identity::random();
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Identity>().unwrap(), id);
        assert_eq!("xyz".parse::<Identity>(), Err(BadIdentity));
        assert_ne!(Identity::random(), id);
    }
}
