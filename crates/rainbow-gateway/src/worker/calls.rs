//! Worker API calls (docs/worker-protocol.md §6): the fields of a `send`,
//! `push`, `sub`, `unsub` or `close` frame checked like the HTTP API checks
//! its parameters, then run through [`crate::api::ops`], the same operations
//! the HTTP endpoints use. A bad field answers as the HTTP API would
//! (`params error`, `channel miss`, `qos level error`); it never closes the
//! worker.

use std::time::Duration;

use bytes::Bytes;
use rainbow_protocol::Qos;
use rainbow_protocol::worker::CallOp;
use serde_json::{Map, Value};

use crate::api::ops::{self, Answer, Message};
use crate::state::Gateway;

/// Longest `timeout` a `send` or `push` may ask for (as `/send/`).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A checked call, ready to run.
#[derive(Debug, Clone)]
pub enum Call {
    /// Deliver to a channel.
    Send {
        /// The channel.
        channel: String,
        /// What to deliver.
        message: Message,
    },
    /// Deliver to one connection.
    Push {
        /// The connection.
        identity: String,
        /// What to deliver.
        message: Message,
    },
    /// Subscribe a connection.
    Sub {
        /// The connection.
        identity: String,
        /// The channel.
        channel: String,
        /// Remove every other subscriber first.
        occupy: bool,
    },
    /// Unsubscribe a connection.
    Unsub {
        /// The connection.
        identity: String,
        /// The channel.
        channel: String,
    },
    /// Close a connection.
    Close {
        /// The connection.
        identity: String,
        /// The close reason.
        reason: String,
    },
}

fn params_error() -> Answer {
    Answer::fail("params_error", "params error")
}

fn string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Answer> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(params_error()),
    }
}

fn required(fields: &Map<String, Value>, name: &str) -> Result<String, Answer> {
    string(fields, name)?.filter(|s| !s.is_empty()).ok_or_else(params_error)
}

/// A number given as a JSON number or a numeric string (as the HTTP API's
/// query parameters are).
fn number(fields: &Map<String, Value>, name: &str) -> Result<Option<f64>, ()> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(()),
        Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

fn message(fields: &Map<String, Value>, body: Bytes) -> Result<Message, Answer> {
    let message_type = match number(fields, "type") {
        Ok(None) => 1,
        Ok(Some(t)) if t.fract() == 0.0 && (0.0..=65535.0).contains(&t) => t as u16,
        _ => return Err(params_error()),
    };
    let qos = match number(fields, "qos") {
        Ok(None) => Qos::ExactlyOnce,
        Ok(Some(q)) if q.fract() == 0.0 && (0.0..=2.0).contains(&q) => {
            Qos::from_u8(q as u8).ok_or_else(|| Answer::fail("params_error", "qos level error"))?
        }
        _ => return Err(Answer::fail("params_error", "qos level error")),
    };
    let timeout = match number(fields, "timeout") {
        Ok(None) => Duration::from_secs(10),
        Ok(Some(t)) if t > 0.0 && t <= MAX_TIMEOUT.as_secs_f64() => Duration::from_secs_f64(t),
        _ => return Err(params_error()),
    };
    Ok(Message { message_type, qos, payload: body, timeout })
}

fn occupy(fields: &Map<String, Value>) -> bool {
    match fields.get("occupy") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        _ => false,
    }
}

/// Checks a call's fields. An `Err` is the answer to send back.
pub fn parse(op: CallOp, fields: &Map<String, Value>, body: Bytes) -> Result<Call, Answer> {
    Ok(match op {
        CallOp::Send => {
            let channel = string(fields, "channel")?
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Answer::fail("params_error", "channel miss"))?;
            Call::Send { channel, message: message(fields, body)? }
        }
        CallOp::Push => Call::Push { identity: required(fields, "identity")?, message: message(fields, body)? },
        CallOp::Sub => Call::Sub {
            identity: required(fields, "identity")?,
            channel: required(fields, "channel")?,
            occupy: occupy(fields),
        },
        CallOp::Unsub => Call::Unsub { identity: required(fields, "identity")?, channel: required(fields, "channel")? },
        CallOp::Close => Call::Close {
            identity: required(fields, "identity")?,
            reason: string(fields, "reason")?.unwrap_or_default(),
        },
    })
}

/// Runs a checked call.
pub async fn run(gw: &Gateway, call: Call) -> Answer {
    match call {
        Call::Send { channel, message } => ops::send(gw, &channel, message).await,
        Call::Push { identity, message } => ops::push(gw, &identity, message).await,
        Call::Sub { identity, channel, occupy } => ops::sub(gw, &identity, &channel, occupy).await,
        Call::Unsub { identity, channel } => ops::unsub(gw, &identity, &channel).await,
        Call::Close { identity, reason } => ops::close(gw, &identity, &reason).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn msg(call: Result<Call, Answer>) -> String {
        match call {
            Err(a) => a.body["msg"].as_str().unwrap_or_default().to_owned(),
            Ok(c) => format!("ok {c:?}"),
        }
    }

    #[test]
    fn send_defaults_and_errors_match_the_http_api() {
        let call = parse(CallOp::Send, &fields(json!({"channel": "room"})), Bytes::from_static(b"x")).unwrap();
        let Call::Send { channel, message } = call else { panic!() };
        assert_eq!(channel, "room");
        assert_eq!(
            (message.message_type, message.qos, message.timeout),
            (1, Qos::ExactlyOnce, Duration::from_secs(10))
        );
        let call =
            parse(CallOp::Send, &fields(json!({"channel": "r", "type": "7", "qos": 0, "timeout": 0.5})), Bytes::new());
        let Ok(Call::Send { message, .. }) = call else { panic!() };
        assert_eq!((message.message_type, message.qos), (7, Qos::AtMostOnce));
        assert_eq!(msg(parse(CallOp::Send, &fields(json!({})), Bytes::new())), "channel miss");
        assert_eq!(msg(parse(CallOp::Send, &fields(json!({"channel": ""})), Bytes::new())), "channel miss");
        assert_eq!(
            msg(parse(CallOp::Send, &fields(json!({"channel": "r", "qos": 3})), Bytes::new())),
            "qos level error"
        );
        assert_eq!(
            msg(parse(CallOp::Send, &fields(json!({"channel": "r", "type": 70000})), Bytes::new())),
            "params error"
        );
        assert_eq!(
            msg(parse(CallOp::Send, &fields(json!({"channel": "r", "timeout": 0})), Bytes::new())),
            "params error"
        );
        assert_eq!(msg(parse(CallOp::Send, &fields(json!({"channel": 5})), Bytes::new())), "params error");
    }

    #[test]
    fn connection_calls_need_an_identity() {
        assert_eq!(msg(parse(CallOp::Push, &fields(json!({})), Bytes::new())), "params error");
        assert_eq!(msg(parse(CallOp::Sub, &fields(json!({"identity": "i"})), Bytes::new())), "params error");
        let Ok(Call::Sub { occupy, .. }) =
            parse(CallOp::Sub, &fields(json!({"identity": "i", "channel": "c", "occupy": "true"})), Bytes::new())
        else {
            panic!()
        };
        assert!(occupy);
        let Ok(Call::Close { reason, .. }) = parse(CallOp::Close, &fields(json!({"identity": "i"})), Bytes::new())
        else {
            panic!()
        };
        assert_eq!(reason, "");
    }
}
