//! Carrying client messages to the backend's forward hook (docs/protocol.md §4).
//!
//! Each connection has an ordered queue of messages to forward (in
//! `Connection`) and at most `forward_concurrency` drains working it; with
//! the default of 1 the backend sees a connection's messages in the order
//! sent. Drains exist only while there is work, and every call first takes
//! one of the gateway-wide `max_inflight_forwards` slots, so a slow backend
//! holds a bounded number of requests and the rest wait in bounded
//! per-connection queues (which in turn stop reading their sockets).
//!
//! With one drain per connection (the default) the drain runs inside the
//! connection's own task ([`Drain::Inline`]): no task is spawned per message
//! and the reply needs no wake-up to reach the socket, which measurably cuts
//! the gateway's CPU per round trip. If the connection ends first, the
//! driver spawns what is left of it, so a call under way still completes.
//! With more, each drain is a task of its own.
//!
//! The answer goes back through the connection's outbox as
//! `Outgoing::Forwarded`, where the driver turns it into an ACK or REC (or, on
//! failure, forgets a qos-2 id so the client's retransmission is processed).

use std::sync::Arc;

use rainbow_protocol::SendPacket;
use tracing::warn;

use crate::hub::{Connection, NextForward, Outgoing};
use crate::state::Gateway;

/// A drain of a connection's forward queue.
pub type DrainFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + std::marker::Send>>;

/// Where a drain runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Polled by the connection's driver, which writes replies as it sees
    /// them: no wake-up is needed.
    Inline,
    /// A task of its own, which wakes the driver for each reply.
    Task,
}

/// Queues a client message for forwarding. If fewer than `concurrency`
/// drains run, starts one: spawned, or (with `concurrency` 1) returned for
/// the driver to poll.
pub fn enqueue(gw: &Arc<Gateway>, conn: &Arc<Connection>, send: SendPacket, concurrency: usize) -> Option<DrainFuture> {
    if !conn.queue_forward(send, concurrency) {
        return None;
    }
    if concurrency == 1 {
        return Some(Box::pin(drain(gw.clone(), conn.clone(), Drain::Inline)));
    }
    gw.tasks.spawn(drain(gw.clone(), conn.clone(), Drain::Task));
    None
}

async fn drain(gw: Arc<Gateway>, conn: Arc<Connection>, mode: Drain) {
    while let NextForward::Message { send, wake_reader } = conn.next_forward() {
        if wake_reader && mode == Drain::Task {
            // The queue has room again: the driver may resume reading. (An
            // inline drain's driver looks again after polling it.)
            conn.wake();
        }
        forward_one(&gw, &conn, send, mode).await;
    }
}

async fn forward_one(gw: &Gateway, conn: &Arc<Connection>, send: SendPacket, mode: Drain) {
    let permit = match gw.forward_slots.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            gw.metrics.forwards_waiting.inc();
            let permit = gw.forward_slots.acquire().await;
            gw.metrics.forwards_waiting.dec();
            match permit {
                Ok(permit) => permit,
                // The semaphore is never closed while the gateway runs.
                Err(_) => return,
            }
        }
    };
    let config = gw.config();
    let cookie = conn.cookie();
    let result = gw.backend.forward(&config, conn.identity(), cookie.as_deref(), &send).await;
    drop(permit);
    let reply = match result {
        Ok((body, control)) => {
            gw.metrics.forward("ok");
            control.apply(&gw.hub, conn);
            Some(body)
        }
        Err(cause) => {
            gw.metrics.forward(cause.label());
            warn!(
                identity = %conn.identity(),
                message_type = send.message_type,
                qos = send.qos.as_u8(),
                side = cause.side(),
                %cause,
                "forward failed; the client gets no reply and may retransmit"
            );
            None
        }
    };
    let forwarded = Outgoing::Forwarded { id: send.id, qos: send.qos, reply };
    match mode {
        // Waking the task that is polling us would only make it run again.
        Drain::Inline => conn.push_reply_quietly(forwarded),
        Drain::Task => conn.push_reply(forwarded),
    }
}
