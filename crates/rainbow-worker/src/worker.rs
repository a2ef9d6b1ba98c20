//! [`Worker`]: handler registration and the loop that keeps a session with
//! the gateway: connect with a signed URL, `hello` with the credits, run a
//! handler per task (at most `credits` at once, as the gateway guarantees),
//! send the replies and the API calls, drain on request, and reconnect with
//! backoff when the session drops.
//!
//! Each session has its own reply channel: replies of handlers that finish
//! after their session dropped are discarded, because the gateway has
//! already requeued those tasks for another session.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rainbow_protocol::worker::{FromWorker, ToWorker};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::api::{Api, CALL_QUEUE, CallRequest};
use crate::config::WorkerConfig;
use crate::dedup::DedupStore;
use crate::error::WorkerError;
use crate::task::{Reply, Task, TaskKind};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type BoxReply = Pin<Box<dyn Future<Output = Reply> + Send>>;
type Handler = Arc<dyn Fn(Task, Api) -> BoxReply + Send + Sync>;

/// The protocol version this library speaks.
pub const VERSION: u64 = rainbow_protocol::worker::VERSION;

/// How long the gateway has to send `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handlers' replies waiting to be written.
const REPLY_QUEUE: usize = 256;

#[derive(Clone, Default)]
struct Handlers {
    connect: Option<Handler>,
    close: Option<Handler>,
    messages: HashMap<u16, Handler>,
    any_message: Option<Handler>,
}

fn boxed<F, Fut>(f: F) -> Handler
where
    F: Fn(Task, Api) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |task, api| Box::pin(f(task, api)))
}

/// The signal that stopped [`Worker::run_until_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: stop.
    Terminate,
    /// SIGHUP: the conventional "restart" (the caller may re-exec itself).
    Hangup,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

#[derive(Debug)]
struct Control {
    drain: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    credits: watch::Sender<u32>,
}

/// Controls a running [`Worker`] from elsewhere; cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    control: Arc<Control>,
    api: Api,
}

impl Handle {
    /// Asks the worker to drain: the gateway sends it no new task, it
    /// finishes the ones it holds, then [`Worker::run`] returns `Ok`.
    pub fn drain(&self) {
        self.control.drain.send_replace(true);
    }

    /// Stops at once, without draining: the gateway requeues the tasks this
    /// worker holds for other workers.
    pub fn stop(&self) {
        self.control.stop.send_replace(true);
    }

    /// Changes the window (0 pauses the worker; held tasks stay its own).
    pub fn set_credits(&self, credits: u32) {
        self.control.credits.send_replace(credits.min(crate::config::MAX_CREDITS));
    }

    /// The API handle.
    pub fn api(&self) -> Api {
        self.api.clone()
    }
}

/// A worker: handlers plus the connection loop.
///
/// ```no_run
/// use rainbow_worker::{Reply, Worker, WorkerConfig};
///
/// # async fn demo() -> Result<(), rainbow_worker::WorkerError> {
/// let worker = Worker::new(WorkerConfig::new("ws://127.0.0.1:1984/worker/", "qwe123").credits(8))
///     .on_connect(|task, _api| async move {
///         if task.header("x-deviceid").is_some() { Reply::accept().subscribe("lobby") } else { Reply::deny() }
///     })
///     .on_message(1, |task, api| async move {
///         let _ = api.send("lobby", rainbow_worker::Message::new(1001, task.payload.clone()).qos(0)).await;
///         Reply::new(task.payload)
///     });
/// worker.run_until_signal().await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    config: WorkerConfig,
    handlers: Handlers,
    dedup: Option<Arc<dyn DedupStore>>,
    control: Arc<Control>,
    calls: mpsc::Receiver<CallRequest>,
    api: Api,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker with no handlers: connects are accepted, closes
    /// acknowledged, and messages answered with an error until handlers are
    /// registered.
    pub fn new(config: WorkerConfig) -> Worker {
        let (tx, calls) = mpsc::channel(CALL_QUEUE);
        let control = Arc::new(Control {
            drain: watch::channel(false).0,
            stop: watch::channel(false).0,
            credits: watch::channel(config.credits).0,
        });
        let api = Api { tx, timeout: config.call_timeout };
        Worker { config, handlers: Handlers::default(), dedup: None, control, calls, api }
    }

    /// Handles connect tasks: answer [`Reply::accept`] or [`Reply::deny`]
    /// (plus context and channels). Without it every client is accepted.
    pub fn on_connect<F, Fut>(mut self, handler: F) -> Worker
    where
        F: Fn(Task, Api) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.handlers.connect = Some(boxed(handler));
        self
    }

    /// Handles messages of one type.
    pub fn on_message<F, Fut>(mut self, message_type: u16, handler: F) -> Worker
    where
        F: Fn(Task, Api) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.handlers.messages.insert(message_type, boxed(handler));
        self
    }

    /// Handles messages of every type without a handler of its own.
    pub fn on_any_message<F, Fut>(mut self, handler: F) -> Worker
    where
        F: Fn(Task, Api) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.handlers.any_message = Some(boxed(handler));
        self
    }

    /// Handles close tasks (the reply only acknowledges).
    pub fn on_close<F, Fut>(mut self, handler: F) -> Worker
    where
        F: Fn(Task, Api) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.handlers.close = Some(boxed(handler));
        self
    }

    /// Makes handling idempotent by task key with `store` (see
    /// [`crate::dedup`]): a task whose key is recorded is answered from the
    /// record without running the handler, and every successful reply is
    /// recorded before it is sent.
    pub fn dedup(mut self, store: impl DedupStore) -> Worker {
        self.dedup = Some(Arc::new(store));
        self
    }

    /// A handle to drain, stop, change credits or call the API.
    pub fn handle(&self) -> Handle {
        Handle { control: self.control.clone(), api: self.api.clone() }
    }

    /// Runs until drained (see [`Handle::drain`]) or stopped. Connection
    /// failures are retried with backoff; a refused handshake (wrong token)
    /// or a gateway speaking another protocol version is returned as an
    /// error.
    pub async fn run(self) -> Result<(), WorkerError> {
        let Worker { config, handlers, dedup, control, calls, api } = self;
        let shared = Arc::new(Shared { handlers, dedup, locks: Mutex::new(HashMap::new()), api });
        let mut runner = Runner {
            drain: control.drain.subscribe(),
            stop: control.stop.subscribe(),
            credits: control.credits.subscribe(),
            config,
            shared,
            calls,
        };
        let mut attempt = 0u32;
        loop {
            if *runner.drain.borrow() || *runner.stop.borrow() {
                return Ok(());
            }
            match runner.connect().await {
                Ok(ws) => {
                    attempt = 0;
                    match Box::pin(runner.session(ws)).await {
                        SessionEnd::Done => return Ok(()),
                        SessionEnd::Fatal(e) => return Err(e),
                        SessionEnd::Lost(why) => warn!("worker session lost ({why}); reconnecting"),
                    }
                }
                Err(e @ (WorkerError::Refused { .. } | WorkerError::InvalidUrl(_))) => return Err(e),
                Err(e) => warn!("{e}; retrying"),
            }
            let delay = runner.config.backoff(attempt);
            attempt = attempt.saturating_add(1);
            let (mut drain, mut stop) = (runner.drain.clone(), runner.stop.clone());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = async { drop(drain.wait_for(|d| *d).await) } => return Ok(()),
                () = async { drop(stop.wait_for(|s| *s).await) } => return Ok(()),
            }
        }
    }

    /// [`Worker::run`], draining on SIGTERM, SIGHUP or SIGINT. Returns the
    /// signal that stopped it (`None` if it was drained another way). A
    /// second signal while draining stops at once (the gateway requeues what
    /// this worker still holds).
    pub async fn run_until_signal(self) -> Result<Option<StopSignal>, WorkerError> {
        let handle = self.handle();
        let (got_tx, mut got_rx) = oneshot::channel();
        let listener = tokio::spawn(async move {
            let first = next_signal().await;
            let _ = got_tx.send(first);
            info!(signal = ?first, "draining: finishing the tasks held, taking no new ones");
            handle.drain();
            let second = next_signal().await;
            warn!(signal = ?second, "second signal while draining: stopping now; held tasks go to other workers");
            handle.stop();
        });
        let result = self.run().await;
        listener.abort();
        result.map(|()| got_rx.try_recv().ok())
    }
}

#[cfg(unix)]
async fn next_signal() -> StopSignal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        warn!("cannot listen for SIGTERM/SIGHUP; only Ctrl-C drains");
        let _ = tokio::signal::ctrl_c().await;
        return StopSignal::Interrupt;
    };
    tokio::select! {
        _ = term.recv() => StopSignal::Terminate,
        _ = hup.recv() => StopSignal::Hangup,
        _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
    }
}

#[cfg(not(unix))]
async fn next_signal() -> StopSignal {
    let _ = tokio::signal::ctrl_c().await;
    StopSignal::Interrupt
}

/// What the handler tasks share.
struct Shared {
    handlers: Handlers,
    dedup: Option<Arc<dyn DedupStore>>,
    /// Tasks with the same key run one at a time (a redelivery may arrive on
    /// a new session while the first delivery's handler still runs).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    api: Api,
}

impl Shared {
    fn handler(&self, task: &Task) -> Option<Handler> {
        match task.kind {
            TaskKind::Connect => self.handlers.connect.clone(),
            TaskKind::Close => self.handlers.close.clone(),
            TaskKind::Message => {
                self.handlers.messages.get(&task.message_type).or(self.handlers.any_message.as_ref()).cloned()
            }
        }
    }

    async fn call(&self, task: Task) -> Reply {
        let Some(handler) = self.handler(&task) else {
            return match task.kind {
                TaskKind::Connect => Reply::accept(),
                TaskKind::Close => Reply::empty(),
                TaskKind::Message => Reply::error(format!("no handler for message type {}", task.message_type)),
            };
        };
        match AssertUnwindSafe(handler(task, self.api.clone())).catch_unwind().await {
            Ok(reply) => reply,
            Err(_) => Reply::error("the worker's handler panicked"),
        }
    }

    async fn handle(&self, task: Task) -> Reply {
        let Some(store) = self.dedup.clone() else { return self.call(task).await };
        let key = task.key.clone();
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock().await;
        let reply = match store.get(&key) {
            Some(reply) => {
                debug!(key = %key, attempt = task.attempt, "task already handled; answering from the dedup store");
                reply
            }
            None => {
                let reply = self.call(task).await;
                if reply.error.is_none()
                    && let Err(e) = store.put(&key, &reply)
                {
                    warn!(key = %key, "cannot record the handled task in the dedup store: {e}");
                }
                reply
            }
        };
        drop(guard);
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this task hold the lock: nobody waits on it.
        if Arc::strong_count(&lock) <= 2 {
            locks.remove(&key);
        }
        reply
    }
}

enum SessionEnd {
    /// Drained or stopped: `run` returns.
    Done,
    /// Reconnect.
    Lost(String),
    /// Give up.
    Fatal(WorkerError),
}

struct Runner {
    config: WorkerConfig,
    shared: Arc<Shared>,
    calls: mpsc::Receiver<CallRequest>,
    drain: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    credits: watch::Receiver<u32>,
}

fn short(body: Option<&Vec<u8>>) -> String {
    let text = body.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    text.chars().take(200).collect()
}

impl Runner {
    async fn connect(&self) -> Result<Ws, WorkerError> {
        let url = self.config.signed_url()?;
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_message_size))
            .max_frame_size(Some(self.config.max_message_size));
        let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true);
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Err(_) => Err(WorkerError::Connect(format!("no answer within {:?}", self.config.connect_timeout))),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(WsError::Http(response))) => {
                Err(WorkerError::Refused { status: response.status().as_u16(), body: short(response.body().as_ref()) })
            }
            Ok(Err(WsError::Url(e))) => Err(WorkerError::InvalidUrl(format!("{}: {e}", self.config.url))),
            Ok(Err(e)) => Err(WorkerError::Connect(e.to_string())),
        }
    }

    async fn session(&mut self, ws: Ws) -> SessionEnd {
        let (mut sink, mut source) = ws.split();
        let worker_id = match welcome(&mut source).await {
            Ok(id) => id,
            Err(end) => return end,
        };
        let credits = *self.credits.borrow_and_update();
        let hello = FromWorker::Hello { credits };
        if let Err(e) = sink.send(Message::Binary(hello.encode())).await {
            return SessionEnd::Lost(format!("cannot send hello: {e}"));
        }
        info!(worker = worker_id, credits, "attached to the gateway");
        let mut s =
            Session { sink, pending: HashMap::new(), next_req: 0, drain_sent: false, last_seen: Instant::now() };
        let (done_tx, mut done_rx) = mpsc::channel::<(u64, Reply)>(REPLY_QUEUE);
        let mut tick = tokio::time::interval(self.config.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silent_after = self.config.ping_interval * 3;
        loop {
            let drain_wanted = *self.drain.borrow();
            if drain_wanted && !s.drain_sent {
                s.drain_sent = true;
                info!("draining: no new tasks; finishing the ones held");
                if let Err(end) = s.write(&FromWorker::Drain).await {
                    return end;
                }
            }
            let (mut drain, mut stop) = (self.drain.clone(), self.stop.clone());
            let step = tokio::select! {
                biased;
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    s.close(CloseCode::Away, "worker stopping").await;
                    return SessionEnd::Done;
                }
                () = async { drop(drain.wait_for(|d| *d).await) }, if !s.drain_sent => Ok(()),
                changed = self.credits.changed() => match changed {
                    Ok(()) => {
                        let credits = *self.credits.borrow_and_update();
                        s.write(&FromWorker::Credit { credits }).await
                    }
                    Err(_) => Ok(()),
                },
                Some((task, reply)) = done_rx.recv() => {
                    s.write(&FromWorker::Reply { task, reply: reply.into_fields() }).await
                }
                Some(call) = self.calls.recv(), if s.pending.len() < CALL_QUEUE => s.call(call).await,
                message = source.next() => self.on_message(&mut s, message, &done_tx).await,
                _ = tick.tick() => {
                    if s.last_seen.elapsed() > silent_after {
                        Err(SessionEnd::Lost(format!("the gateway was silent for {silent_after:?}")))
                    } else {
                        s.sink.send(Message::Ping(Bytes::new())).await.map_err(|e| SessionEnd::Lost(e.to_string()))
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_message(
        &self,
        s: &mut Session,
        message: Option<Result<Message, WsError>>,
        done: &mpsc::Sender<(u64, Reply)>,
    ) -> Result<(), SessionEnd> {
        let message = match message {
            None => return Err(lost_or_done(s, "the gateway closed the connection".into())),
            Some(Err(e)) => return Err(lost_or_done(s, format!("socket error: {e}"))),
            Some(Ok(m)) => m,
        };
        s.last_seen = Instant::now();
        let bytes = match message {
            Message::Binary(b) => b,
            Message::Close(frame) => {
                let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                return Err(lost_or_done(s, format!("the gateway closed the session: {why}")));
            }
            Message::Text(_) => return Err(SessionEnd::Lost("protocol error: a text frame".into())),
            Message::Ping(_) => {
                // Tungstenite queued the pong; flushing sends it.
                return s.sink.flush().await.map_err(|e| SessionEnd::Lost(e.to_string()));
            }
            Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        let frame = ToWorker::decode(bytes).map_err(|e| SessionEnd::Lost(format!("protocol error: {e}")))?;
        match frame {
            ToWorker::Task(task) => {
                let task = Task::from_frame(task);
                let (shared, done) = (self.shared.clone(), done.clone());
                tokio::spawn(async move {
                    let id = task.id;
                    let reply = shared.handle(task).await;
                    // The session may have ended: the gateway requeued the
                    // task, so the reply is dropped.
                    let _ = done.send((id, reply)).await;
                });
                Ok(())
            }
            ToWorker::Result { req, answer } => {
                if let Some(pending) = s.pending.remove(&req) {
                    let _ = pending.send(Ok(Value::Object(answer)));
                }
                Ok(())
            }
            ToWorker::Drained => {
                info!("drained: every task answered; leaving");
                s.close(CloseCode::Normal, "drained").await;
                Err(SessionEnd::Done)
            }
            ToWorker::Welcome { .. } => Err(SessionEnd::Lost("protocol error: a second welcome".into())),
        }
    }
}

/// A session that drops while draining is done: the gateway requeued what
/// it held.
fn lost_or_done(s: &Session, why: String) -> SessionEnd {
    if s.drain_sent { SessionEnd::Done } else { SessionEnd::Lost(why) }
}

async fn welcome(source: &mut SplitStream<Ws>) -> Result<u64, SessionEnd> {
    let deadline = tokio::time::Instant::now() + WELCOME_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, source.next()).await;
        let bytes = match next {
            Err(_) => return Err(SessionEnd::Lost("no welcome from the gateway".into())),
            Ok(Some(Ok(Message::Binary(b)))) => b,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => return Err(SessionEnd::Lost(format!("expected welcome, got {other:?}"))),
        };
        let frame = ToWorker::decode(bytes).map_err(|e| SessionEnd::Lost(format!("protocol error: {e}")))?;
        let ToWorker::Welcome { version, worker, .. } = frame else {
            return Err(SessionEnd::Lost("the gateway's first frame is not welcome".into()));
        };
        if version != VERSION {
            return Err(SessionEnd::Fatal(WorkerError::Protocol(format!(
                "the gateway speaks worker protocol version {version}; this library speaks {VERSION}"
            ))));
        }
        return Ok(worker);
    }
}

struct Session {
    sink: SplitSink<Ws, Message>,
    pending: HashMap<u64, oneshot::Sender<Result<Value, WorkerError>>>,
    next_req: u64,
    drain_sent: bool,
    last_seen: Instant,
}

impl Session {
    async fn write(&mut self, frame: &FromWorker) -> Result<(), SessionEnd> {
        self.sink
            .send(Message::Binary(frame.encode()))
            .await
            .map_err(|e| lost_or_done(self, format!("cannot write to the gateway: {e}")))
    }

    async fn call(&mut self, call: CallRequest) -> Result<(), SessionEnd> {
        if call.answer.is_closed() {
            return Ok(());
        }
        self.next_req += 1;
        let req = self.next_req;
        self.pending.insert(req, call.answer);
        self.write(&FromWorker::Call { req, op: call.op, fields: call.fields, body: call.body }).await
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink.send(Message::Close(Some(frame)))).await;
    }
}
