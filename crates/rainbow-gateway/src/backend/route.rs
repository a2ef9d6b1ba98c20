//! Routing: whether a connect, a message or a close goes to the webhooks or
//! to the workers, and the three entry points the transport calls
//! ([`Backend::connect`], [`Backend::forward`], [`Backend::close`]).
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
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use rainbow_protocol::SendPacket;
use rainbow_protocol::worker::{ReplyFields, TaskEvent};
use tracing::{debug, error, warn};

use super::{Backend, ConnectDecision, Control, HookError, is_withheld};
use crate::config::Config;
use crate::config::route::{EventSet, WorkerRoute};
use crate::hub::{Connection, Identity};
use crate::worker::pool::{Failure, Kind, Limits, TaskResult, TaskSpec};

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
    if !routed(config.worker_events, kind) || message_type.is_some_and(|t| !config.worker_types.contains(t)) {
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

/// Whether `worker_events` lets `kind` go to workers.
fn routed(events: EventSet, kind: Kind) -> bool {
    match kind {
        Kind::Connect => events.connect,
        Kind::Message => events.message,
        Kind::Close => events.close,
    }
}

fn limits(config: &Config) -> Limits {
    Limits { queue_size: config.worker_queue_size, queue_timeout: config.worker_queue_timeout }
}

async fn run(backend: &Backend, config: &Config, spec: TaskSpec, timeout: Duration) -> TaskResult {
    match backend.workers.submit(spec, timeout, limits(config), Instant::now()) {
        Ok(pending) => pending.wait().await,
        Err(failure) => Err(failure),
    }
}

/// The controls a worker's reply asks for, checked like a webhook's.
fn control(worker: &str, fields: &ReplyFields) -> Result<Control, HookError> {
    let control = Control {
        cookie: fields.context.clone(),
        subscribe: fields.sub.clone(),
        unsubscribe: fields.unsub.clone(),
        invalid: None,
    };
    control.check().map_err(|problem| HookError::BadAnswer(format!("worker {worker:?}: {problem}")))?;
    Ok(control)
}

/// Turns a reply carrying `error` into a failure.
fn checked(outcome: TaskResult) -> TaskResult {
    match outcome {
        Ok(reply) if reply.fields.error.is_some() => {
            Err(Failure::Error { worker: reply.worker, message: reply.fields.error.unwrap_or_default() })
        }
        other => other,
    }
}

impl Backend {
    /// The connect hook, routed: the webhook, or a `connect` task.
    pub async fn connect(
        &self,
        config: &Config,
        identity: Identity,
        peer: SocketAddr,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> ConnectDecision {
        if target(config, Kind::Connect, None, self.workers.attached() > 0) == Target::Webhook {
            return self.webhooks.connect(config, &self.metrics, identity, query, headers).await;
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
        match checked(run(self, config, spec, config.hook_timeout).await) {
            Ok(reply) => match reply.fields.accept {
                Some(true) => match control(&reply.worker, &reply.fields) {
                    Ok(control) => ConnectDecision::Accept(control),
                    Err(e) => ConnectDecision::Unavailable(e),
                },
                Some(false) => ConnectDecision::Deny,
                None => ConnectDecision::Unavailable(HookError::Worker(Failure::Error {
                    worker: reply.worker,
                    message: "its connect reply has no `accept` (true or false); fix the worker".into(),
                })),
            },
            Err(failure) => ConnectDecision::Unavailable(HookError::Worker(failure)),
        }
    }

    /// The forward hook, routed: the webhook, or a `message` task. Returns
    /// the reply payload and the controls to apply, as the webhook does.
    pub async fn forward(
        &self,
        config: &Config,
        identity: Identity,
        cookie: Option<&str>,
        send: &SendPacket,
    ) -> Result<(Bytes, Control), HookError> {
        let t = send.message_type;
        if target(config, Kind::Message, Some(t), self.workers.attached() > 0) == Target::Webhook {
            return self.webhooks.forward(config, &self.metrics, identity, cookie, t, send.payload.clone()).await;
        }
        let event = TaskEvent::Message { message_type: t, qos: send.qos, context: cookie.map(str::to_owned) };
        let spec = TaskSpec { identity: identity.to_string(), event, body: send.payload.clone() };
        match checked(run(self, config, spec, config.forward_timeout).await) {
            Ok(reply) => {
                let control = control(&reply.worker, &reply.fields)?;
                Ok((reply.fields.body, control))
            }
            Err(failure) => Err(HookError::Worker(failure)),
        }
    }

    /// The close hook, routed: the webhook, or a `close` task. The task is
    /// submitted after the connection's last message task finished, so a
    /// worker sees `close` after every `message` of the connection. Run by
    /// the connection's own task, once its driver has ended.
    pub async fn close(&self, config: &Config, conn: &Connection) {
        let identity = conn.identity();
        let cookie = conn.cookie();
        if target(config, Kind::Close, None, self.workers.attached() > 0) == Target::Webhook {
            return self.webhooks.close(config, &self.metrics, identity, cookie.as_deref()).await;
        }
        if tokio::time::timeout(config.forward_timeout, conn.forwards_done()).await.is_err() {
            warn!(%identity, side = "worker", "a message task of this connection outlived forward_timeout; sending close anyway");
        }
        let event = TaskEvent::Close { context: cookie.as_deref().map(str::to_owned) };
        let spec = TaskSpec { identity: identity.to_string(), event, body: Bytes::new() };
        match checked(run(self, config, spec, config.hook_timeout).await) {
            Ok(reply) => debug!(%identity, worker = %reply.worker, "close task answered"),
            Err(failure) => {
                error!(%identity, side = "worker", cause = %failure, "close task failed; no worker was told this connection ended")
            }
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
