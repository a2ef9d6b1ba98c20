//! Carrying client messages to the backend's forward hook (spec §4).
//!
//! Each connection has an ordered queue of messages to forward (in
//! `Connection`) and at most `forward_concurrency` tasks draining it; with the
//! default of 1 the backend sees a connection's messages in the order sent.
//! Tasks exist only while there is work, and every call first takes one of
//! the gateway-wide `max_inflight_forwards` slots, so a slow backend holds a
//! bounded number of requests and the rest wait in bounded per-connection
//! queues (which in turn stop reading their sockets).
//!
//! The answer goes back through the connection's outbox as
//! `Outgoing::Forwarded`, where the driver turns it into an ACK or REC (or, on
//! failure, forgets a qos-2 id so the client's retransmission is processed).

use std::sync::Arc;

use rainbow_protocol::Send;
use tracing::warn;

use crate::hub::{Connection, Outgoing};
use crate::state::Gateway;

/// Queues a client message for forwarding and starts a task if the
/// connection has fewer than `concurrency` running.
pub fn enqueue(gw: &Arc<Gateway>, conn: &Arc<Connection>, send: Send, concurrency: usize) {
    let start = {
        let mut forwards = conn.forwards();
        forwards.queue.push_back(send);
        let start = (forwards.active as usize) < concurrency;
        if start {
            forwards.active += 1;
        }
        start
    };
    if start {
        gw.tasks.spawn(drain(gw.clone(), conn.clone()));
    }
}

async fn drain(gw: Arc<Gateway>, conn: Arc<Connection>) {
    loop {
        let (send, reader_paused) = {
            let mut forwards = conn.forwards();
            match forwards.queue.pop_front() {
                Some(send) => (send, std::mem::take(&mut forwards.reader_paused)),
                None => {
                    forwards.active -= 1;
                    return;
                }
            }
        };
        if reader_paused {
            // The queue has room again: the driver may resume reading.
            conn.wake();
        }
        forward_one(&gw, &conn, send).await;
    }
}

async fn forward_one(gw: &Gateway, conn: &Arc<Connection>, send: Send) {
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
    let result = crate::worker::route::forward(gw, &config, conn.identity(), cookie.as_deref(), &send).await;
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
    conn.push_reply(Outgoing::Forwarded { id: send.id, qos: send.qos, reply });
}
