//! The answer to a backend request, whichever way it came: its JSON body as
//! the original API answered it (docs/protocol.md §8) and a short label for
//! `rainbow_api_calls_total` and the worker call metrics. It crosses the
//! cluster as is, so a call run on another node is counted by what it did
//! there.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hub::Delivered;

/// What a request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done: a subscription changed, a close was ordered, a qos-0 message
    /// was queued. `{"status": 0}`.
    Done,
    /// A qos 1/2 delivery: `connections` receivers answered, `data` is the
    /// first non-empty reply. `{"status": 0, "connections": N, "data": D}`.
    Answered {
        /// Receivers that answered.
        connections: usize,
        /// The first non-empty reply payload (lossy UTF-8).
        data: String,
    },
    /// A qos 1/2 delivery whose receivers all stayed silent until the
    /// timeout. `{"status": 1, "msg": "timeout"}`.
    Timeout,
    /// No live connection has this identity. `{"status": 1, "msg": "no such
    /// connection"}`.
    NoConnection,
    /// A field is missing or wrong.
    Invalid(Problem),
    /// A limit refused it (the message says which).
    Limit {
        /// What was refused and why.
        msg: String,
    },
    /// Redis is unreachable: only this node was reached. `connections` is
    /// what was delivered here (for a send).
    ClusterUnavailable {
        /// Receivers reached on this node, when the request delivered.
        connections: Option<usize>,
    },
}

/// Which field is wrong, in the original API's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// `/send/` without a channel: `channel miss`.
    ChannelMiss,
    /// A qos other than 0, 1 or 2: `qos level error`.
    QosLevel,
    /// Any other bad field: `params error`.
    Params,
}

impl Problem {
    /// The answer's `msg`.
    pub fn msg(self) -> &'static str {
        match self {
            Problem::ChannelMiss => "channel miss",
            Problem::QosLevel => "qos level error",
            Problem::Params => "params error",
        }
    }
}

impl Outcome {
    /// The outcome of delivering a message (see `hub::Delivered`).
    pub fn delivered(delivered: Delivered) -> Outcome {
        match delivered {
            Delivered::Queued(_) => Outcome::Done,
            Delivered::Answered(agg) if !agg.complete && agg.answered == 0 => Outcome::Timeout,
            Delivered::Answered(agg) => Outcome::Answered {
                connections: agg.answered,
                data: agg.reply.map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default(),
            },
        }
    }

    /// The JSON answer body.
    pub fn body(&self) -> Value {
        match self {
            Outcome::Done => json!({"status": 0}),
            Outcome::Answered { connections, data } => json!({"status": 0, "connections": connections, "data": data}),
            Outcome::Timeout => fail("timeout"),
            Outcome::NoConnection => fail("no such connection"),
            Outcome::Invalid(problem) => fail(problem.msg()),
            Outcome::Limit { msg } => fail(msg),
            Outcome::ClusterUnavailable { connections: None } => fail("cluster unavailable"),
            Outcome::ClusterUnavailable { connections: Some(n) } => {
                json!({"status": 1, "msg": "cluster unavailable", "connections": n})
            }
        }
    }

    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done | Outcome::Answered { .. } => "ok",
            Outcome::Timeout => "timeout",
            Outcome::NoConnection => "no_connection",
            Outcome::Invalid(_) => "params_error",
            Outcome::Limit { .. } => "limit",
            Outcome::ClusterUnavailable { .. } => "cluster_unavailable",
        }
    }
}

fn fail(msg: &str) -> Value {
    json!({"status": 1, "msg": msg})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Aggregate;
    use bytes::Bytes;

    #[test]
    fn bodies_are_the_original_apis() {
        assert_eq!(Outcome::delivered(Delivered::Queued(3)).body(), json!({"status": 0}));
        let silent = Aggregate { answered: 0, reply: None, complete: false };
        assert_eq!(Outcome::delivered(Delivered::Answered(silent)), Outcome::Timeout);
        let answered = Aggregate { answered: 2, reply: Some(Bytes::from_static(b"hi")), complete: false };
        assert_eq!(
            Outcome::delivered(Delivered::Answered(answered)).body(),
            json!({"status": 0, "connections": 2, "data": "hi"})
        );
        let nobody = Aggregate { answered: 0, reply: None, complete: true };
        assert_eq!(
            Outcome::delivered(Delivered::Answered(nobody)).body(),
            json!({"status": 0, "connections": 0, "data": ""})
        );
        assert_eq!(Outcome::Invalid(Problem::ChannelMiss).body(), json!({"status": 1, "msg": "channel miss"}));
        assert_eq!(
            Outcome::ClusterUnavailable { connections: Some(1) }.body(),
            json!({"status": 1, "msg": "cluster unavailable", "connections": 1})
        );
        assert_eq!(Outcome::NoConnection.label(), "no_connection");
    }

    #[test]
    fn outcomes_cross_the_cluster_unchanged() {
        for outcome in [
            Outcome::Done,
            Outcome::Answered { connections: 4, data: "x".into() },
            Outcome::Invalid(Problem::QosLevel),
            Outcome::Limit { msg: "too many".into() },
            Outcome::ClusterUnavailable { connections: None },
        ] {
            let text = serde_json::to_string(&outcome).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), outcome);
        }
    }
}
