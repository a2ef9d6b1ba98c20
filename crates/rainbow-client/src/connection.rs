//! The background task that owns the WebSocket: one per [`Client`](crate::Client).
//!
//! It drives [`rainbow_protocol::Outbound`] for our sends (ids, retransmission
//! with DUP, deadlines, the REL/COM tail) and [`rainbow_protocol::Inbound`]
//! for the gateway's sends (ACK, REC → REL → COM, qos-2 dedup), answers the
//! gateway's messages before queueing them as [`Event`]s, and reconnects when
//! the policy says so. A timer is armed only while something is in flight.
//!
//! The handles that talk to it ([`Client`](crate::Client), [`Events`](crate::Events))
//! live in [`crate::client`] and [`crate::event`]; the handshake lives in
//! [`crate::handshake`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rainbow_protocol::{
    DecodeError, Disposition, Inbound, InboundConfig, MAX_MESSAGE_ID, Outbound, OutboundConfig, Packet, Qos,
    SendPacket, Timeout, WindowFull,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, warn};

use crate::config::{ClientConfig, ReconnectPolicy};
use crate::error::ClientError;
use crate::event::{Event, EventSink, Room, ServerMessage};
use crate::handshake::{self, Ws};

/// How long we wait for the gateway to finish a close handshake we started
/// (or one it started) before dropping the TCP connection.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The reason we give when the application closes the client.
const CLOSED_BY_CLIENT: &str = "closed by the client";

/// One `Client::send` call, as the task sees it.
pub(crate) struct Request {
    pub(crate) message_type: u16,
    pub(crate) qos: Qos,
    pub(crate) payload: Bytes,
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Result<Bytes, ClientError>>,
}

impl Request {
    fn resolve(self, result: Result<Bytes, ClientError>) {
        // The caller may have stopped waiting (its own timeout): nothing to do.
        let _ = self.reply.send(result);
    }
}

/// State the task leaves behind for the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Why the task ended, once it has: later sends fail with this.
    pub(crate) ended: OnceLock<ClientError>,
}

/// Why one connection ended.
#[derive(Debug)]
enum End {
    /// The application closed the client, or dropped every handle.
    Shutdown,
    /// The gateway closed the connection, or the network dropped it.
    Lost { code: Option<u16>, reason: String },
    /// The gateway sent an invalid packet; we closed with 1002.
    Protocol(DecodeError),
    /// The gateway broke a rule (too many unreleased qos-2 messages: 1008; a
    /// message over the size limit: 1009); we closed with `code`.
    Violation { code: u16, reason: String },
}

impl End {
    /// The close code and reason to report.
    fn close_info(&self) -> (Option<u16>, String) {
        match self {
            End::Shutdown => (Some(1000), CLOSED_BY_CLIENT.to_owned()),
            End::Lost { code, reason } => (*code, reason.clone()),
            End::Protocol(e) => (Some(1002), format!("invalid packet from the gateway: {e}")),
            End::Violation { code, reason } => (Some(*code), reason.clone()),
        }
    }

    fn event(&self) -> Event {
        let (code, reason) = self.close_info();
        Event::Closed { code, reason }
    }

    fn error(&self) -> ClientError {
        if let End::Protocol(e) = self {
            return ClientError::Protocol(e.clone());
        }
        let (code, reason) = self.close_info();
        ClientError::Closed { code, reason }
    }
}

fn closed_by_client() -> ClientError {
    ClientError::Closed { code: Some(1000), reason: CLOSED_BY_CLIENT.to_owned() }
}

/// The task: everything that outlives one connection.
pub(crate) struct Task {
    pub(crate) config: ClientConfig,
    pub(crate) commands: mpsc::Receiver<Request>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) events: EventSink,
    pub(crate) shared: Arc<Shared>,
}

impl Task {
    /// Runs connections until the client is closed or a connection ends for
    /// good.
    pub(crate) async fn run(mut self, mut ws: Ws) {
        let mut carried = Vec::new();
        let mut reconnected = false;
        loop {
            let (end, unanswered) = self.drive(&mut ws, carried, reconnected).await;
            debug!(?end, unanswered = unanswered.len(), "connection ended");
            self.events.notice(end.event());
            let policy = match (&end, self.config.reconnect) {
                (End::Shutdown, _) | (_, None) => return self.finish(end.error(), unanswered),
                (_, Some(policy)) => policy,
            };
            match self.reconnect(policy, end.error()).await {
                Ok(new_ws) => {
                    ws = new_ws;
                    carried = unanswered;
                    reconnected = true;
                }
                Err(error) => return self.finish(error, unanswered),
            }
        }
    }

    /// Fails everything still waiting with `error` and records it for later
    /// sends.
    fn finish(&mut self, error: ClientError, unanswered: Vec<Request>) {
        let _ = self.shared.ended.set(error.clone());
        for request in unanswered {
            request.resolve(Err(error.clone()));
        }
        self.commands.close();
        while let Ok(request) = self.commands.try_recv() {
            request.resolve(Err(error.clone()));
        }
    }

    /// Reconnects with backoff. Gives up on a permanent refusal (401), after
    /// `max_attempts` failures (with the last error), or when the client is
    /// closed meanwhile.
    async fn reconnect(&mut self, policy: ReconnectPolicy, mut last: ClientError) -> Result<Ws, ClientError> {
        let mut attempt = 0u32;
        loop {
            if policy.max_attempts.is_some_and(|max| attempt >= max) {
                return Err(last);
            }
            let delay = policy.delay(attempt);
            debug!(attempt, ?delay, "reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.shutdown.changed() => return Err(closed_by_client()),
            }
            let result = tokio::select! {
                result = handshake::connect(&self.config) => result,
                _ = self.shutdown.changed() => return Err(closed_by_client()),
            };
            match result {
                Ok(ws) => return Ok(ws),
                Err(error) if error.is_permanent() => return Err(error),
                Err(error) => {
                    warn!(%error, attempt, "reconnect failed");
                    last = error;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Runs one connection until it ends. Returns why, and the sends that were
    /// never answered.
    async fn drive(&mut self, ws: &mut Ws, carried: Vec<Request>, reconnected: bool) -> (End, Vec<Request>) {
        let config = &self.config;
        let mut conn = Connection {
            ws,
            config,
            events: &self.events,
            outbound: Outbound::new(OutboundConfig {
                retransmit_interval: config.retransmit_interval,
                // Outbound finds a free id only while fewer than MAX_MESSAGE_ID
                // are in use, so never allow more than that in flight.
                max_in_flight: config.max_in_flight.clamp(1, usize::from(MAX_MESSAGE_ID)),
                release_lifetime: config.request_timeout,
            }),
            inbound: Inbound::new(InboundConfig {
                max_unreleased: config.max_unreleased.max(1),
                ..InboundConfig::default()
            }),
        };
        let mut step = conn.retransmit(carried).await;
        if reconnected {
            self.events.notice(Event::Reconnected);
        }
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let end = loop {
            if let Err(end) = step {
                break end;
            }
            let next = conn.outbound.next_deadline();
            if next != armed {
                if let Some(at) = next {
                    timer.as_mut().reset(tokio::time::Instant::from_std(at));
                }
                armed = next;
            }
            step = tokio::select! {
                incoming = conn.ws.next() => conn.on_incoming(incoming).await,
                request = self.commands.recv() => match request {
                    Some(request) => conn.on_request(request).await,
                    None => Err(conn.shutdown().await),
                },
                _ = self.shutdown.changed() => Err(conn.shutdown().await),
                () = &mut timer, if armed.is_some() => {
                    // Re-armed from the new next deadline on the next turn.
                    armed = None;
                    conn.on_timer().await
                }
            };
        };
        let unanswered = conn.outbound.drain().collect();
        (end, unanswered)
    }
}

/// The state of one connection.
struct Connection<'a> {
    ws: &'a mut Ws,
    config: &'a ClientConfig,
    events: &'a EventSink,
    outbound: Outbound<Request>,
    inbound: Inbound,
}

impl Connection<'_> {
    async fn write(&mut self, packet: Packet) -> Result<(), End> {
        self.write_encoded(packet.encode()).await
    }

    /// Writes a packet already encoded (an answer the QoS state made).
    async fn write_encoded(&mut self, frame: Bytes) -> Result<(), End> {
        self.ws
            .send(Message::Binary(frame))
            .await
            .map_err(|e| End::Lost { code: None, reason: format!("could not write to the gateway: {e}") })
    }

    /// Sends our close frame and waits briefly for the gateway's answer.
    async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        if self.ws.close(Some(frame)).await.is_ok() {
            self.drain_until_closed().await;
        }
    }

    /// Reads (and ignores) until the gateway finishes closing, for at most
    /// [`CLOSE_WAIT`].
    async fn drain_until_closed(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
    }

    async fn shutdown(&mut self) -> End {
        self.close(CloseCode::Normal, "").await;
        End::Shutdown
    }

    /// Sends left unanswered by the previous connection go out again with new
    /// ids and `dup = 1`.
    async fn retransmit(&mut self, carried: Vec<Request>) -> Result<(), End> {
        let mut packets = Vec::with_capacity(carried.len());
        let now = Instant::now();
        for request in carried {
            if let Some(mut packet) = self.track(now, request) {
                if let Packet::Send(send) = &mut packet {
                    send.dup = true;
                }
                packets.push(packet);
            }
        }
        for packet in packets {
            self.write(packet).await?;
        }
        Ok(())
    }

    /// Starts tracking a qos 1/2 request; returns its SEND, or `None` if it
    /// was resolved at once (caller gone, deadline passed, window full).
    fn track(&mut self, now: Instant, request: Request) -> Option<Packet> {
        if request.reply.is_closed() {
            return None;
        }
        if request.deadline <= now {
            request.resolve(Err(ClientError::Timeout));
            return None;
        }
        if !self.outbound.has_capacity() {
            request.resolve(Err(ClientError::InFlightFull(self.outbound.in_flight())));
            return None;
        }
        let (message_type, qos, payload, deadline) =
            (request.message_type, request.qos, request.payload.clone(), request.deadline);
        // Cannot fail: capacity was checked just above (on failure the request
        // would be dropped and its caller would see the connection as ended).
        self.outbound.send(now, message_type, qos, payload, deadline, request).ok()
    }

    async fn on_request(&mut self, request: Request) -> Result<(), End> {
        if request.qos != Qos::AtMostOnce {
            return match self.track(Instant::now(), request) {
                Some(packet) => self.write(packet).await,
                None => Ok(()),
            };
        }
        if request.reply.is_closed() {
            return Ok(());
        }
        let send = SendPacket {
            message_type: request.message_type,
            qos: Qos::AtMostOnce,
            id: 0,
            dup: false,
            payload: request.payload.clone(),
        };
        match self.write(Packet::Send(send)).await {
            Ok(()) => {
                request.resolve(Ok(Bytes::new()));
                Ok(())
            }
            Err(end) => {
                request.resolve(Err(end.error()));
                Err(end)
            }
        }
    }

    async fn on_timer(&mut self) -> Result<(), End> {
        let mut packets = Vec::new();
        self.outbound.on_timeout(Instant::now(), |due| match due {
            Timeout::Retransmit(packet) => packets.push(packet),
            Timeout::Expired(request) => request.resolve(Err(ClientError::Timeout)),
        });
        for packet in packets {
            self.write(packet).await?;
        }
        Ok(())
    }

    async fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), End> {
        match incoming {
            Some(Ok(Message::Binary(bytes))) => self.on_packet(bytes).await,
            // The spec says binary; a text frame holding a packet is accepted.
            Some(Ok(Message::Text(text))) => self.on_packet(Bytes::from(text)).await,
            Some(Ok(Message::Close(frame))) => {
                // tungstenite answers the close frame on the next read; wait
                // for the gateway to drop the TCP connection.
                self.drain_until_closed().await;
                let (code, reason) = match frame {
                    Some(frame) => (Some(u16::from(frame.code)), frame.reason.as_str().to_owned()),
                    None => (Some(1005), String::new()),
                };
                Err(End::Lost { code, reason })
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                warn!(error = %e, "oversized message from the gateway, closing");
                self.close(CloseCode::Size, "message too big").await;
                Err(End::Violation {
                    code: 1009,
                    reason: format!("the gateway sent a message over the size limit: {e}"),
                })
            }
            Some(Err(e)) => Err(End::Lost { code: None, reason: format!("connection to the gateway lost: {e}") }),
            None => Err(End::Lost {
                code: None,
                reason: "the gateway closed the connection without a close frame".to_owned(),
            }),
        }
    }

    async fn on_packet(&mut self, bytes: Bytes) -> Result<(), End> {
        let packet = match Packet::decode(bytes) {
            Ok(packet) => packet,
            Err(e) => {
                warn!(error = %e, "invalid packet from the gateway, closing");
                self.close(CloseCode::Protocol, "invalid packet").await;
                return Err(End::Protocol(e));
            }
        };
        match packet {
            Packet::Send(send) => self.on_send(send).await,
            Packet::Ack(reply) => {
                if let Some(answered) = self.outbound.on_ack(reply.id, reply.payload) {
                    answered.tag.resolve(Ok(answered.payload));
                }
                Ok(())
            }
            Packet::Rec(reply) => {
                let (answered, rel) = self.outbound.on_rec(Instant::now(), reply.id, reply.payload);
                if let Some(answered) = answered {
                    answered.tag.resolve(Ok(answered.payload));
                }
                self.write(rel).await
            }
            Packet::Rel(id) => {
                let com = self.inbound.on_rel(id);
                self.write(com).await
            }
            Packet::Com(id) => {
                self.outbound.on_com(id);
                Ok(())
            }
        }
    }

    /// A SEND from the gateway: dedup, make room, answer, then queue it.
    async fn on_send(&mut self, send: SendPacket) -> Result<(), End> {
        match self.inbound.on_send(Instant::now(), &send) {
            Ok(Disposition::Process) => {}
            Ok(Disposition::Duplicate(Some(rec))) => return self.write_encoded(rec).await,
            Ok(Disposition::Duplicate(None)) => return Ok(()),
            Err(WindowFull(n)) => {
                let reason = format!("{n} qos-2 messages from the gateway await their REL");
                warn!(%reason, "closing");
                self.close(CloseCode::Policy, "too many unreleased messages").await;
                return Err(End::Violation { code: 1008, reason });
            }
        }
        let events = self.events;
        let permit = match events.room_for_message() {
            Room::Yes(permit) => Some(permit),
            Room::NoListener => None,
            Room::Full => {
                // Leave it unanswered (and forget a qos-2 id) so the gateway
                // retransmits it when the application may have drained.
                debug!(message_type = send.message_type, qos = ?send.qos, "event queue full, refusing message");
                self.inbound.failed(send.id, send.qos);
                return Ok(());
            }
        };
        let message =
            ServerMessage { message_type: send.message_type, qos: send.qos, dup: send.dup, payload: send.payload };
        let mut written = Ok(());
        if message.qos != Qos::AtMostOnce {
            let reply = match &self.config.handler {
                None => Some(Bytes::new()),
                Some(handler) => catch_unwind(AssertUnwindSafe(|| handler(&message).unwrap_or_default())).ok(),
            };
            match reply {
                Some(reply) => {
                    if let Some(answer) = self.inbound.answer(send.id, message.qos, reply) {
                        written = self.write_encoded(answer).await;
                    }
                }
                None => {
                    // The handler panicked: no answer, so the gateway retries.
                    warn!(message_type = message.message_type, "the message handler panicked; message left unanswered");
                    self.inbound.failed(send.id, message.qos);
                    return Ok(());
                }
            }
        }
        if let Some(permit) = permit {
            permit.send(Event::Message(message));
        }
        written
    }
}
