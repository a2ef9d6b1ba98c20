//! The values of the API signature keys (`api_signature`, `v1_replay`):
//! what they may say and how they parse. What the gateway does with them is
//! `crate::signature` (docs/protocol.md §7.3).

use std::fmt;
use std::str::FromStr;

/// `api_signature`: which signature versions signed API calls and worker
/// handshakes may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiSignature {
    /// v1 only (the original's; a v2 signature is refused).
    V1,
    /// v1 or v2, told apart by the signature's length.
    Any,
    /// v2 only: a captured v1 triple is useless.
    V2,
}

impl FromStr for ApiSignature {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "v1" => Ok(ApiSignature::V1),
            "any" => Ok(ApiSignature::Any),
            "v2" => Ok(ApiSignature::V2),
            _ => Err(format!("expected v1, any or v2, got {v:?}")),
        }
    }
}

impl fmt::Display for ApiSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiSignature::V1 => "v1",
            ApiSignature::Any => "any",
            ApiSignature::V2 => "v2",
        })
    }
}

/// `v1_replay`: what an identical v1-signed request inside the signature
/// window gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Replay {
    /// Refused as a replay (the default).
    Reject,
    /// Accepted: for old SDKs (rainbow-django 0.2) whose honest calls
    /// collide.
    Allow,
}

impl FromStr for V1Replay {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "reject" => Ok(V1Replay::Reject),
            "allow" => Ok(V1Replay::Allow),
            _ => Err(format!("expected reject or allow, got {v:?}")),
        }
    }
}

impl fmt::Display for V1Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            V1Replay::Reject => "reject",
            V1Replay::Allow => "allow",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print_back() {
        for v in ["v1", "any", "v2"] {
            assert_eq!(v.parse::<ApiSignature>().unwrap().to_string(), v);
        }
        assert_eq!(" V2 ".parse::<ApiSignature>(), Ok(ApiSignature::V2));
        assert!("v3".parse::<ApiSignature>().unwrap_err().contains("v1, any or v2"));
        for v in ["reject", "allow"] {
            assert_eq!(v.parse::<V1Replay>().unwrap().to_string(), v);
        }
        assert!("yes".parse::<V1Replay>().unwrap_err().contains("reject or allow"));
    }
}
