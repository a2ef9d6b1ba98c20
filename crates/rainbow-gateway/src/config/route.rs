//! The values of the `[workers]` routing keys (`worker_route`,
//! `worker_types`, `worker_events`): what they may say and how they parse.
//! What the gateway does with them is `backend::route`.

use std::fmt;
use std::str::FromStr;

/// `worker_route`: where routed events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRoute {
    /// Always the webhooks.
    Webhook,
    /// Always the workers.
    Workers,
    /// The workers while any is attached, else the webhooks.
    Auto,
}

impl FromStr for WorkerRoute {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "webhook" | "webhooks" => Ok(WorkerRoute::Webhook),
            "workers" | "worker" => Ok(WorkerRoute::Workers),
            "auto" => Ok(WorkerRoute::Auto),
            _ => Err(format!("expected webhook, workers or auto, got {v:?}")),
        }
    }
}

/// `worker_types`: the message types routed by `worker_route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSet {
    /// `None` = every type; else inclusive ranges.
    ranges: Option<Vec<(u16, u16)>>,
}

impl TypeSet {
    /// Whether `message_type` is in the set.
    pub fn contains(&self, message_type: u16) -> bool {
        match &self.ranges {
            None => true,
            Some(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&message_type)),
        }
    }
}

impl FromStr for TypeSet {
    type Err = String;
    /// `*`, or types and ranges separated by commas or spaces: `1, 7, 100-199`.
    fn from_str(v: &str) -> Result<Self, String> {
        if v.trim() == "*" {
            return Ok(TypeSet { ranges: None });
        }
        let mut ranges = Vec::new();
        for item in v.split([',', ' ', ';']).map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("expected `*` or message types like `1, 7, 100-199`, got {item:?}");
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => {
                    (lo.trim().parse::<u16>().map_err(|_| bad())?, hi.trim().parse::<u16>().map_err(|_| bad())?)
                }
                None => {
                    let n = item.parse::<u16>().map_err(|_| bad())?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(bad());
            }
            ranges.push((lo, hi));
        }
        Ok(TypeSet { ranges: Some(ranges) })
    }
}

/// `worker_events`: which events may go to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet {
    /// Connect hooks.
    pub connect: bool,
    /// Client messages.
    pub message: bool,
    /// Close hooks.
    pub close: bool,
}

impl FromStr for EventSet {
    type Err = String;
    /// `*` or a list of `connect`, `message`, `close`.
    fn from_str(v: &str) -> Result<Self, String> {
        if v.trim() == "*" {
            return Ok(EventSet { connect: true, message: true, close: true });
        }
        let mut set = EventSet { connect: false, message: false, close: false };
        for item in v.split([',', ' ', ';']).map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "connect" => set.connect = true,
                "message" | "messages" => set.message = true,
                "close" => set.close = true,
                _ => return Err(format!("expected `*` or a list of connect, message, close; got {item:?}")),
            }
        }
        Ok(set)
    }
}

impl fmt::Display for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(self.connect, "connect"), (self.message, "message"), (self.close, "close")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_keys() {
        assert_eq!("AUTO".parse::<WorkerRoute>(), Ok(WorkerRoute::Auto));
        assert!("sometimes".parse::<WorkerRoute>().is_err());
        let t: TypeSet = "1, 7 100-199".parse().unwrap();
        assert!(t.contains(1) && t.contains(7) && t.contains(150) && !t.contains(2) && !t.contains(200));
        assert!("*".parse::<TypeSet>().unwrap().contains(65535));
        assert!(!"".parse::<TypeSet>().unwrap().contains(1));
        assert!("9-3".parse::<TypeSet>().is_err());
        assert!("x".parse::<TypeSet>().is_err());
        let e: EventSet = "message, close".parse().unwrap();
        assert_eq!((e.connect, e.message, e.close), (false, true, true));
        assert_eq!(e.to_string(), "message,close");
        assert!("connect,reconnect".parse::<EventSet>().is_err());
    }
}
