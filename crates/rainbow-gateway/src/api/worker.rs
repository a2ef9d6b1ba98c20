//! The worker endpoint (`GET /worker/`) and the task that drives one worker's
//! WebSocket (docs/worker-protocol.md §1, §3, §5, §6): tasks go out to the
//! worker, its replies and its API calls come in. The calls are the same
//! requests as the HTTP API's, read by `ops::Request::parse` and run by
//! [`super::execute::run`]; a bad field answers as the HTTP API would
//! (`params error`, `channel miss`, `qos level error`) and never closes the
//! worker.
//!
//! [`endpoint`] checks the upgrade and the signature (the same check as an
//! API call, so a replayed handshake URL is refused), then hands the socket to
//! [`run`]. The session sends `welcome`, waits for `hello`, attaches the
//! worker to the [`Pool`](super::pool::Pool) and then loops over: deliveries
//! from the pool (written as `task` frames), answers of the worker's API calls
//! (written as `result` frames), frames from the worker, and a one-second
//! liveness tick. When it ends, for whatever reason, the worker is detached
//! and the tasks it held go back to the front of the queue.
//!
//! The session decides nothing about tasks; the pool (`crate::worker`) does.
//! This file only moves frames and turns protocol errors into close codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rainbow_protocol::worker::{CallOp, FrameError, FromWorker, Task, ToWorker};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use super::execute;
use crate::handshake::{self, NotWebSocket, Refused, param, query_pairs};
use crate::ops::{Outcome, Request as OpRequest};
use crate::state::Gateway;
use crate::worker::pool::{DELIVERY_CAPACITY, Delivery, ReplyResult, WorkerId, WorkerReply};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Most workers attached at once; further handshakes get 503.
pub const MAX_WORKERS: usize = 1024;
/// Most API calls one worker may have unanswered.
pub const MAX_CALLS: usize = 1024;
/// Longest worker name kept, bytes.
pub const MAX_NAME: usize = 64;
/// Room for the header on top of `max_message_size`.
pub const HEADER_ALLOWANCE: usize = 64 * 1024;
/// How long a new session waits for `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close frame may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"status": 1, "msg": msg}))).into_response()
}

/// The `name` parameter, cut to [`MAX_NAME`] bytes, control characters
/// dropped.
fn worker_name(raw: Option<&str>) -> Arc<str> {
    let mut name = String::new();
    for c in raw.unwrap_or("").chars().filter(|c| !c.is_control()) {
        if name.len() + c.len_utf8() > MAX_NAME {
            break;
        }
        name.push(c);
    }
    Arc::from(name)
}

/// `GET /worker/`: checks the upgrade and the signature, then starts the
/// session.
pub async fn endpoint(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let config = gw.config();
    let accept = match handshake::upgrade_accept(request.headers()) {
        Ok(accept) => accept,
        Err(NotWebSocket::NoKey) => return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"),
        Err(NotWebSocket::NoUpgrade | NotWebSocket::Version) => {
            return refuse(StatusCode::BAD_REQUEST, "expected a WebSocket (version 13) upgrade to /worker/");
        }
    };
    let query = query_pairs(request.uri());
    match handshake::check_signature(&gw, "worker", request.method(), request.uri(), &query, b"") {
        Ok(()) => {}
        Err(Refused::Busy) => return refuse(StatusCode::TOO_MANY_REQUESTS, "too many requests"),
        Err(Refused::Signature) => return refuse(StatusCode::UNAUTHORIZED, "signature error"),
    }
    if gw.is_shutting_down() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "gateway is shutting down");
    }
    if gw.backend.workers().attached() >= MAX_WORKERS {
        warn!(%peer, side = "worker", max = MAX_WORKERS, "worker refused: too many workers attached");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many workers attached");
    }
    gw.metrics.api_call("worker", "ok");
    let name = worker_name(param(&query, "name"));
    let on_upgrade = hyper::upgrade::on(&mut request);
    let limit = config.max_message_size.saturating_add(HEADER_ALLOWANCE);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .max_write_buffer_size(limit.saturating_mul(2));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config)).await;
                run(gw, ws, name, peer).await;
            }
            Err(e) => debug!(%peer, side = "worker", "worker upgrade failed: {e}"),
        }
    });
    handshake::switching_protocols(accept)
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The worker closed (or the connection dropped) after `drained`.
    Drained,
    /// The worker closed the session.
    Closed,
    /// The connection dropped without a close (crash, kill, network).
    Lost,
    /// The worker broke the protocol: close with this code and reason.
    Protocol(u16, String),
    /// Pings went unanswered.
    PingTimeout,
    /// A socket error.
    Error(String),
    /// The gateway is shutting down.
    Shutdown,
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            End::Drained => "drained",
            End::Closed => "closed",
            End::Lost => "lost",
            End::Protocol(..) => "protocol_error",
            End::PingTimeout => "ping_timeout",
            End::Error(_) => "error",
            End::Shutdown => "shutdown",
        }
    }
}

fn protocol(e: &FrameError) -> End {
    End::Protocol(1002, e.to_string())
}

struct Session {
    gw: Arc<Gateway>,
    id: WorkerId,
    name: Arc<str>,
    sink: SplitSink<Ws, Message>,
    calls: JoinSet<(u64, CallOp, Outcome)>,
    last_seen: Instant,
    ping_sent: bool,
    drained: bool,
    write_timeout: Duration,
}

/// Runs one worker's session until it ends, then detaches it.
pub async fn run(gw: Arc<Gateway>, ws: Ws, name: Arc<str>, peer: SocketAddr) {
    let workers = gw.backend.workers();
    let id = workers.next_worker_id();
    let config = gw.config();
    let (sink, mut source) = ws.split();
    let mut session = Session {
        gw: gw.clone(),
        id,
        name: name.clone(),
        sink,
        calls: JoinSet::new(),
        last_seen: Instant::now(),
        ping_sent: false,
        drained: false,
        write_timeout: config.pong_timeout,
    };
    let (tx, rx) = mpsc::channel(DELIVERY_CAPACITY);
    let mut attached = false;
    let end = match session.hello(&mut source).await {
        Ok(credits) => {
            workers.attach(id, name.clone(), credits, tx, Instant::now());
            attached = true;
            info!(worker = %name, id, %peer, credits, "worker attached");
            Box::pin(session.serve(&mut source, rx, config.ping_interval, config.pong_timeout)).await
        }
        Err(end) => end,
    };
    match &end {
        End::Protocol(code, reason) => {
            warn!(worker = %name, id, side = "worker", "protocol error: {reason}; closing the worker with {code}; fix the worker or its SDK");
            session.close(*code, reason).await;
        }
        End::PingTimeout => {
            warn!(worker = %name, id, side = "worker", "worker stopped answering pings; treating it as dead");
            session.close(1001, "ping timeout").await;
        }
        End::Shutdown => session.close(1001, "gateway shutting down").await,
        End::Error(e) => debug!(worker = %name, id, side = "worker", "worker socket error: {e}"),
        End::Drained | End::Closed | End::Lost => {}
    }
    workers.metrics().disconnect(end.label());
    let requeued = if attached { workers.detach(id) } else { 0 };
    if requeued > 0 {
        warn!(
            worker = %name,
            id,
            side = "worker",
            requeued,
            reason = end.label(),
            "worker left holding unanswered tasks; they were requeued at the front for the next free worker"
        );
    } else {
        info!(worker = %name, id, reason = end.label(), "worker detached");
    }
}

impl Session {
    async fn write(&mut self, frame: Bytes) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, self.sink.send(Message::Binary(frame))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(socket_end(&e)),
            Err(_) => Err(End::PingTimeout),
        }
    }

    async fn write_frame(&mut self, frame: &ToWorker) -> Result<(), End> {
        self.write(frame.encode()).await
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let mut reason = reason.to_owned();
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let _ = tokio::time::timeout(CLOSE_GRACE, self.sink.send(Message::Close(Some(frame)))).await;
    }

    /// Reads one WebSocket message as a worker frame. `Ok(None)`: nothing to
    /// act on (ping, pong).
    async fn read(&mut self, message: Option<Result<Message, WsError>>) -> Result<Option<FromWorker>, End> {
        let message = match message {
            None => return Err(if self.drained { End::Drained } else { End::Lost }),
            Some(Ok(m)) => m,
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Err(if self.drained { End::Drained } else { End::Lost });
            }
            Some(Err(WsError::Capacity(e))) => return Err(End::Protocol(1009, format!("frame too big: {e}"))),
            Some(Err(WsError::Protocol(e))) => {
                return Err(End::Protocol(1002, format!("websocket protocol error: {e}")));
            }
            Some(Err(e)) => return Err(socket_end(&e)),
        };
        self.last_seen = Instant::now();
        self.ping_sent = false;
        match message {
            Message::Binary(bytes) => FromWorker::decode(bytes).map(Some).map_err(|e| protocol(&e)),
            Message::Text(_) => Err(End::Protocol(1002, "text frames are not part of the worker protocol".into())),
            Message::Ping(_) => {
                // Tungstenite queued the pong; flushing sends it.
                let _ = tokio::time::timeout(self.write_timeout, self.sink.flush()).await;
                Ok(None)
            }
            Message::Pong(_) | Message::Frame(_) => Ok(None),
            Message::Close(_) => Err(if self.drained { End::Drained } else { End::Closed }),
        }
    }

    /// Sends `welcome` and waits for `hello`; returns the credits.
    async fn hello(&mut self, source: &mut SplitStream<Ws>) -> Result<u32, End> {
        let workers = self.gw.backend.workers();
        if *workers.closing().borrow() {
            return Err(End::Shutdown);
        }
        let welcome = ToWorker::welcome(workers.node(), self.id);
        self.write_frame(&welcome).await?;
        let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
        loop {
            let Ok(message) = tokio::time::timeout_at(deadline, source.next()).await else {
                return Err(End::Protocol(1002, format!("no hello within {HELLO_TIMEOUT:?}")));
            };
            match self.read(message).await? {
                None => continue,
                Some(FromWorker::Hello { credits }) => return Ok(credits),
                Some(_) => return Err(End::Protocol(1002, "the first frame must be hello".into())),
            }
        }
    }

    async fn serve(
        &mut self,
        source: &mut SplitStream<Ws>,
        mut deliveries: mpsc::Receiver<Delivery>,
        ping_interval: Duration,
        pong_timeout: Duration,
    ) -> End {
        let mut closing = self.gw.backend.workers().closing();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                // The watch guard must not live across the handlers' awaits.
                () = async { drop(closing.wait_for(|c| *c).await) } => Err(End::Shutdown),
                Some(delivery) = deliveries.recv() => self.write(task_frame(&delivery)).await,
                Some(done) = self.calls.join_next(), if !self.calls.is_empty() => match done {
                    Ok((req, op, outcome)) => {
                        self.gw.backend.workers().metrics().call(op.name(), outcome.label());
                        self.write_frame(&ToWorker::result(req, outcome.body())).await
                    }
                    // An operation task cannot panic on input; if one did,
                    // the worker's call stays unanswered and its SDK times out.
                    Err(e) => {
                        warn!(worker = %self.name, side = "gateway", "a worker API call failed: {e}");
                        Ok(())
                    }
                },
                message = source.next() => match self.read(message).await {
                    Ok(Some(op)) => self.on_frame(op).await,
                    Ok(None) => Ok(()),
                    Err(end) => Err(end),
                },
                _ = tick.tick() => self.liveness(ping_interval, pong_timeout).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn liveness(&mut self, ping_interval: Duration, pong_timeout: Duration) -> Result<(), End> {
        let idle = self.last_seen.elapsed();
        if idle >= ping_interval + pong_timeout {
            return Err(End::PingTimeout);
        }
        if idle >= ping_interval && !self.ping_sent {
            self.ping_sent = true;
            match tokio::time::timeout(self.write_timeout, self.sink.send(Message::Ping(Bytes::new()))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(socket_end(&e)),
                Err(_) => return Err(End::PingTimeout),
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, op: FromWorker) -> Result<(), End> {
        let gw = self.gw.clone();
        let pool = gw.backend.workers();
        match op {
            FromWorker::Hello { .. } => return Err(End::Protocol(1002, "hello sent twice".into())),
            FromWorker::Credit { credits } => pool.credit(self.id, credits),
            FromWorker::Drain => {
                info!(worker = %self.name, id = self.id, "worker is draining: no new tasks");
                if pool.drain(self.id) {
                    return self.send_drained().await;
                }
            }
            FromWorker::Reply { task, reply } => {
                let label = if reply.error.is_some() { "error" } else { "ok" };
                let answer = WorkerReply { worker: self.name.clone(), fields: reply };
                let (result, drained) = pool.reply(self.id, task, Ok(answer));
                let label = match result {
                    ReplyResult::Answered => label,
                    ReplyResult::Late => "late",
                    ReplyResult::Unknown => {
                        debug!(worker = %self.name, task, side = "worker", "reply to an unknown or already failed task; ignored");
                        "unknown"
                    }
                };
                pool.metrics().reply(label);
                if drained {
                    return self.send_drained().await;
                }
            }
            FromWorker::Call { req, op, fields, body } => {
                if self.calls.len() >= MAX_CALLS {
                    pool.metrics().call(op.name(), "too_many_calls");
                    let refused = Outcome::Limit { msg: "too many calls".into() };
                    return self.write_frame(&ToWorker::result(req, refused.body())).await;
                }
                match OpRequest::parse(op, &fields, body) {
                    Ok(request) => {
                        self.calls.spawn(async move { (req, op, execute::run(&gw, request).await) });
                    }
                    Err(problem) => {
                        let refused = Outcome::Invalid(problem);
                        pool.metrics().call(op.name(), refused.label());
                        return self.write_frame(&ToWorker::result(req, refused.body())).await;
                    }
                }
            }
        }
        Ok(())
    }

    async fn send_drained(&mut self) -> Result<(), End> {
        self.drained = true;
        info!(worker = %self.name, id = self.id, "worker drained: it holds no task and may close");
        self.write_frame(&ToWorker::Drained).await
    }
}

fn socket_end(e: &WsError) -> End {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Closed,
        WsError::Io(io)
            if matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
        {
            End::Lost
        }
        other => End::Error(other.to_string()),
    }
}

/// The `task` frame of a delivery.
pub fn task_frame(d: &Delivery) -> Bytes {
    ToWorker::Task(Task {
        task: d.task,
        key: d.key.to_string(),
        attempt: d.attempt,
        identity: d.spec.identity.clone(),
        event: d.spec.event.clone(),
        body: d.spec.body.clone(),
    })
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::pool::TaskSpec;
    use rainbow_protocol::Qos;
    use rainbow_protocol::worker::{TaskEvent, split};
    use serde_json::Value;

    #[test]
    fn names_are_cut_and_cleaned() {
        assert_eq!(&*worker_name(None), "");
        assert_eq!(&*worker_name(Some("a\nb")), "ab");
        let long = "é".repeat(40);
        let cut = worker_name(Some(&long));
        assert!(cut.len() <= MAX_NAME && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn task_frames_carry_the_delivery_and_the_spec() {
        let event = TaskEvent::Message { message_type: 7, qos: Qos::AtLeastOnce, context: None };
        let spec = Arc::new(TaskSpec { identity: "abc".into(), event, body: Bytes::from_static(b"pay") });
        let d = Delivery { task: 3, key: Arc::from("n-3"), attempt: 2, spec };
        let raw = split(task_frame(&d)).unwrap();
        assert_eq!(
            Value::Object(raw.header),
            json!({"op": "task", "task": 3, "kind": "message", "key": "n-3", "attempt": 2, "identity": "abc",
                   "type": 7, "qos": 1, "context": null})
        );
        assert_eq!(&raw.body[..], b"pay");
    }
}
