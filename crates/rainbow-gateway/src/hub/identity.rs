//! Connection identities: 32 bytes, shown as 64 hex digits (docs/protocol.md §3).
//!
//! The first 4 bytes are the tag of the node that holds the connection, the
//! other 28 are random. The tag is the cluster's identity → node directory:
//! any node routes an API call for an identity to its node without asking
//! Redis (see `cluster`). 224 random bits keep identities unguessable.
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

    /// A fresh random identity of a connection held by node `tag`.
    pub fn for_node(tag: u32) -> Identity {
        let mut bytes: [u8; 32] = rand::random();
        bytes[..4].copy_from_slice(&tag.to_be_bytes());
        Identity(bytes)
    }

    /// The tag of the node holding this connection.
    pub fn node_tag(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
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
        let tagged = Identity::for_node(0xdead_beef);
        assert_eq!(tagged.node_tag(), 0xdead_beef);
        assert!(tagged.to_string().starts_with("deadbeef"));
        assert_eq!(tagged.to_string().parse::<Identity>().unwrap().node_tag(), 0xdead_beef);
    }
}
