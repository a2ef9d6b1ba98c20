//! Routing: whether a connect, a message or a close goes to the webhooks or
//! to the workers, and the three entry points the transport calls instead of
//! the hooks ([`connect`], [`forward`], [`close`]).
//!
//! The decision ([`target`]) is a pure function of the `[workers]` keys and
//! whether a worker is attached:
//!
//! 1. An event not in `worker_events`, or a message whose type is not in
//!    `worker_types`, goes to its webhook, as without workers.
//! 2. `worker_route = webhook`: the webhook. `workers`: the workers (tasks
//!    wait in the queue while none is free).
//! 3. `worker_route = auto` (the default): the workers while at least one is
//!    attached (draining ones count); with none attached, the webhook, except
//!    a message when `forward_url` is empty: it waits in the queue for a
//!    worker rather than failing. A connect or close with its URL empty and
//!    no worker attached behaves as without workers (accepted, skipped).
//!
//! A gateway that never sees a worker therefore behaves as before, except
//! that with no `forward_url` messages wait `worker_queue_timeout` before
//! failing instead of failing at once (the client gets no reply either way).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use rainbow_protocol::Send;
use rainbow_protocol::worker::{ReplyFields, TaskEvent};
use tracing::{debug, error, warn};

use super::pool::{Kind, Limits, Outcome, TaskSpec};
use crate::backend::{ConnectDecision, Control, HookError, is_withheld};
use crate::config::Config;
use crate::hub::{Connection, Identity};
use crate::state::Gateway;

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

impl EventSet {
    /// Whether `kind` may go to workers.
    pub fn contains(&self, kind: Kind) -> bool {
        match kind {
            Kind::Connect => self.connect,
            Kind::Message => self.message,
            Kind::Close => self.close,
        }
    }
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

/// Where an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The hook URL (or the behaviour without one).
    Webhook,
    /// A worker, through the queue.
    Worker,
}

/// The routing decision (see the module docs). `message_type` is `Some` for
/// messages; `attached` is whether any worker is attached.
pub fn target(config: &Config, kind: Kind, message_type: Option<u16>, attached: bool) -> Target {
    if !config.worker_events.contains(kind) || message_type.is_some_and(|t| !config.worker_types.contains(t)) {
        return Target::Webhook;
    }
    match config.worker_route {
        WorkerRoute::Webhook => Target::Webhook,
        WorkerRoute::Workers => Target::Worker,
        WorkerRoute::Auto if attached => Target::Worker,
        WorkerRoute::Auto if kind == Kind::Message && config.forward_url.is_none() => Target::Worker,
        WorkerRoute::Auto => Target::Webhook,
    }
}

fn limits(config: &Config) -> Limits {
    Limits { queue_size: config.worker_queue_size, queue_timeout: config.worker_queue_timeout }
}

async fn run(gw: &Gateway, config: &Config, spec: TaskSpec, timeout: Duration) -> Outcome {
    match gw.workers.submit(spec, timeout, limits(config), Instant::now()) {
        Ok(pending) => pending.wait().await,
        Err(failure) => Err(failure),
    }
}

fn control(fields: &ReplyFields) -> Control {
    Control {
        cookie: fields.context.clone(),
        subscribe: fields.sub.clone(),
        unsubscribe: fields.unsub.clone(),
        invalid: None,
    }
}

/// Turns a reply carrying `error` into a failure.
fn checked(outcome: Outcome) -> Outcome {
    match outcome {
        Ok(reply) if reply.fields.error.is_some() => {
            Err(super::pool::Failure::Error { worker: reply.worker, message: reply.fields.error.unwrap_or_default() })
        }
        other => other,
    }
}

/// The connect hook, routed: the webhook, or a `connect` task.
pub async fn connect(
    gw: &Gateway,
    config: &Config,
    identity: Identity,
    peer: SocketAddr,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> ConnectDecision {
    if target(config, Kind::Connect, None, gw.workers.attached() > 0) == Target::Webhook {
        return gw.backend.connect(config, &gw.metrics, identity, query, headers).await;
    }
    let mut header_map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if is_withheld(name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match header_map.get_mut(name.as_str()) {
            // Repeated headers are joined as HTTP allows.
            Some(existing) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => {
                header_map.insert(name.as_str().to_owned(), value);
            }
        }
    }
    // A repeated parameter keeps its last value.
    let params = query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let event = TaskEvent::Connect { headers: header_map, params, remote: peer.to_string() };
    let spec = TaskSpec { identity: identity.to_string(), event, body: Bytes::new() };
    match checked(run(gw, config, spec, config.hook_timeout).await) {
        Ok(reply) => match reply.fields.accept {
            Some(true) => ConnectDecision::Accept(control(&reply.fields)),
            Some(false) => ConnectDecision::Deny,
            None => ConnectDecision::Unavailable(HookError::Worker(super::pool::Failure::Error {
                worker: reply.worker,
                message: "its connect reply has no `accept` (true or false); fix the worker".into(),
            })),
        },
        Err(failure) => ConnectDecision::Unavailable(HookError::Worker(failure)),
    }
}

/// The forward hook, routed: the webhook, or a `message` task. Returns the
/// reply payload and the controls to apply, as the webhook does.
pub async fn forward(
    gw: &Gateway,
    config: &Config,
    identity: Identity,
    cookie: Option<&str>,
    send: &Send,
) -> Result<(Bytes, Control), HookError> {
    let t = send.message_type;
    if target(config, Kind::Message, Some(t), gw.workers.attached() > 0) == Target::Webhook {
        return gw.backend.forward(config, &gw.metrics, identity, cookie, t, send.payload.clone()).await;
    }
    let event = TaskEvent::Message { message_type: t, qos: send.qos, context: cookie.map(str::to_owned) };
    let spec = TaskSpec { identity: identity.to_string(), event, body: send.payload.clone() };
    match checked(run(gw, config, spec, config.forward_timeout).await) {
        Ok(reply) => {
            let control = control(&reply.fields);
            Ok((reply.fields.body, control))
        }
        Err(failure) => Err(HookError::Worker(failure)),
    }
}

/// How often [`close`] looks whether the connection's last message is done.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// The close hook, routed: the webhook, or a `close` task. The task is
/// submitted after the connection's last message task finished, so a worker
/// sees `close` after every `message` of the connection.
pub async fn close(gw: &Gateway, conn: &Connection) {
    let config = gw.config();
    let identity = conn.identity();
    let cookie = conn.cookie();
    if target(&config, Kind::Close, None, gw.workers.attached() > 0) == Target::Webhook {
        return gw.backend.close(&config, &gw.metrics, identity, cookie.as_deref()).await;
    }
    let waited = Instant::now();
    while conn.forwards().active > 0 {
        if waited.elapsed() > config.forward_timeout {
            warn!(%identity, side = "worker", "a message task of this connection outlived forward_timeout; sending close anyway");
            break;
        }
        tokio::time::sleep(IDLE_POLL).await;
    }
    let event = TaskEvent::Close { context: cookie.as_deref().map(str::to_owned) };
    let spec = TaskSpec { identity: identity.to_string(), event, body: Bytes::new() };
    match checked(run(gw, &config, spec, config.hook_timeout).await) {
        Ok(reply) => debug!(%identity, worker = %reply.worker, "close task answered"),
        Err(failure) => {
            error!(%identity, side = "worker", cause = %failure, "close task failed; no worker was told this connection ended")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let mut all = vec![("security_token", "t")];
        all.extend_from_slice(pairs);
        Config::from_settings(&Settings::from_pairs(all)).unwrap()
    }

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

    #[test]
    fn defaults_keep_webhooks_while_no_worker_is_attached() {
        let c = config(&[("forward_url", "http://b/m/"), ("connect_url", "http://b/c/")]);
        for kind in [Kind::Connect, Kind::Message, Kind::Close] {
            let t = (kind == Kind::Message).then_some(1);
            assert_eq!(target(&c, kind, t, false), Target::Webhook, "{kind:?}");
            assert_eq!(target(&c, kind, t, true), Target::Worker, "{kind:?}");
        }
    }

    #[test]
    fn auto_without_a_forward_url_waits_for_workers_but_connect_and_close_do_not() {
        let c = config(&[]);
        assert_eq!(target(&c, Kind::Message, Some(1), false), Target::Worker);
        assert_eq!(target(&c, Kind::Connect, None, false), Target::Webhook);
        assert_eq!(target(&c, Kind::Close, None, false), Target::Webhook);
    }

    #[test]
    fn route_types_and_events() {
        let c = config(&[("worker_route", "workers"), ("worker_types", "7"), ("worker_events", "message")]);
        assert_eq!(target(&c, Kind::Message, Some(7), false), Target::Worker);
        assert_eq!(target(&c, Kind::Message, Some(8), true), Target::Webhook);
        assert_eq!(target(&c, Kind::Connect, None, true), Target::Webhook);
        let c = config(&[("worker_route", "webhook")]);
        assert_eq!(target(&c, Kind::Message, Some(7), true), Target::Webhook);
    }
}
