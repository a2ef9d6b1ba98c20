//! The command line: the benchmarks (`idle`, `connect`, `fanout`, `rpc`,
//! `churn`), the hostile clients (`hostile`), the benchmarks' own backend
//! (`backend`), and the hidden `worker` that a run starts when it splits
//! itself over processes.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clients::RpcPlan;
use crate::engine::Behaviour;
use crate::sources::Sources;

/// Load and memory benchmarks for the Rainbow gateway (loopback only).
///
/// Prints exactly one JSON line with the results on stdout; progress and
/// messages go to stderr.
#[derive(Parser, Debug)]
#[command(name = "rainbow-bench", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open N connections, hold them idle, report the gateway's RSS per connection.
    Idle(IdleArgs),
    /// Open N connections at a rate, report handshakes per second and latency.
    Connect(ConnectArgs),
    /// N subscribers on one channel, publications at a rate: deliveries/s, latency, loss.
    Fanout(FanoutArgs),
    /// C clients sending qos-1 messages through the gateway to a backend: round trips/s, latency.
    Rpc(RpcArgs),
    /// Hold N connections, closing and reopening a fraction per second; track the gateway's RSS.
    Churn(ChurnArgs),
    /// N hostile connections cycling through attacks; how the gateway ends each.
    Hostile(HostileArgs),
    /// A minimal fast backend: connect/close hooks, forward hook, Pushpin WebSocket-over-HTTP.
    Backend(BackendArgs),
    /// The least a server can do: one send(2) per fan-out delivery, one HTTP call per rpc message.
    Floor(FloorArgs),
    /// Run one share of a load and report JSON lines (started by the bench itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Settings shared by every benchmark that opens connections.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The gateway's WebSocket URL. Repeat it for several gateway nodes:
    /// connection number i goes to the (i mod count)-th URL, so the nodes get
    /// equal shares whatever the process split.
    #[arg(long = "url", default_value = "ws://127.0.0.1:1984/connect/")]
    pub urls: Vec<String>,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections started per second in total; 0 = as fast as --concurrency allows.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Handshakes in flight at most, per process.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Source addresses to spread connections over: a range A-B, a comma list, or `none`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.40")]
    pub sources: Sources,
    /// Seconds one connect + handshake may take before it counts as failed.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Connections per bench process; above it the run splits over worker processes.
    #[arg(long, default_value_t = 18_000)]
    pub per_process: usize,
    /// Allow a gateway address outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Runtime threads of each worker process (0 = one per core). One is
    /// cheaper: measured at 19,000 subscribers and 100,000 deliveries/s, two
    /// single-threaded workers used 20 % less CPU than two two-threaded ones.
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
}

/// `rainbow-bench idle`.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connection settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Seconds to hold the connections idle once all are open.
    #[arg(long, default_value_t = 20)]
    pub hold: u64,
    /// The gateway's process id (its /proc/PID/status is read). With several
    /// `--url`s, this one process's RSS is divided by every connection: give
    /// several URLs only when this process serves them all.
    #[arg(long)]
    pub pid: u32,
    /// Connections opened and closed before the "before" RSS is read.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Seconds to wait after the warm-up before reading the "before" RSS.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
}

/// `rainbow-bench connect`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connection settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// The gateway's process id, to report its CPU time and RSS (optional).
    #[arg(long)]
    pub pid: Option<u32>,
}

/// `rainbow-bench worker` (hidden): one share of a load.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The gateway's WebSocket URLs (repeated), taken round robin by global connection number.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Connections to open.
    #[arg(long)]
    pub connections: usize,
    /// Global number of the first connection.
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Connections started per second; 0 = unpaced.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Source addresses.
    #[arg(long, default_value = "none")]
    pub sources: Sources,
    /// Seconds one open may take.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Device id prefix.
    #[arg(long, default_value = "bench")]
    pub device_prefix: String,
    /// What each connection does once open.
    #[arg(long, value_enum, default_value_t = BehaviourKind::Idle)]
    pub behaviour: BehaviourKind,
    /// Subscribe: seconds after which a delivery counts as late.
    #[arg(long, default_value_t = 1.0)]
    pub late: f64,
    /// Rpc: requests outstanding per client.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Rpc: message type.
    #[arg(long, default_value_t = 1)]
    pub message_type: u16,
    /// Rpc: payload bytes.
    #[arg(long, default_value_t = 32)]
    pub payload_size: usize,
    /// Rpc: seconds before an unanswered request counts as failed.
    #[arg(long, default_value_t = 5.0)]
    pub rpc_timeout: f64,
    /// Rpc: seconds before measuring.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Rpc: seconds of measuring.
    #[arg(long, default_value_t = 1.0)]
    pub measure: f64,
    /// Rpc: seconds between a client's requests (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub interval: f64,
    /// Churn: seconds between a connection's reopenings.
    #[arg(long, default_value_t = 20.0)]
    pub period: f64,
    /// Hostile: the plan, as JSON.
    #[arg(long)]
    pub hostile: Option<String>,
    /// Runtime threads (0 = one per core; 1 = a single-threaded runtime).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The behaviours a worker can run (see [`Behaviour`]).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BehaviourKind {
    /// Answer pings.
    Idle,
    /// Fan-out subscriber.
    Subscribe,
    /// Closed-loop qos-1 client.
    Rpc,
    /// Close and reopen on a schedule.
    Churn,
    /// Cycle through attacks (needs --hostile).
    Hostile,
}

/// A duration from a number of seconds given on the command line.
pub fn seconds(name: &str, secs: f64) -> anyhow::Result<Duration> {
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        bail!("--{name} must be a number of seconds between 0 and 10^7, not {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

impl RpcArgs {
    /// The connection settings of the clients.
    pub fn load(&self) -> LoadArgs {
        LoadArgs {
            urls: vec![self.url.clone()],
            connections: self.clients,
            rate: 0.0,
            concurrency: 64,
            sources: self.sources.clone(),
            handshake_timeout: 10.0,
            per_process: 18_000,
            allow_remote: self.allow_remote,
            no_progress: self.no_progress,
            worker_threads: 1,
        }
    }
}

impl LoadArgs {
    /// The URLs for a report: one, or several separated by spaces.
    pub fn url_label(&self) -> String {
        self.urls.join(" ")
    }
}

impl WorkerArgs {
    /// The behaviour these arguments describe.
    pub fn behaviour(&self) -> anyhow::Result<Behaviour> {
        Ok(match self.behaviour {
            BehaviourKind::Idle => Behaviour::Idle,
            BehaviourKind::Subscribe => Behaviour::Subscribe { late: seconds("late", self.late)? },
            BehaviourKind::Rpc => Behaviour::Rpc(RpcPlan {
                window: self.window,
                message_type: self.message_type,
                payload_size: self.payload_size,
                timeout: seconds("rpc-timeout", self.rpc_timeout)?,
                warmup: seconds("warmup", self.warmup)?,
                measure: seconds("measure", self.measure)?,
                interval: Some(seconds("interval", self.interval)?).filter(|d| !d.is_zero()),
            }),
            BehaviourKind::Churn => Behaviour::Churn { period: seconds("period", self.period)? },
            BehaviourKind::Hostile => {
                let plan = self.hostile.as_deref().context("--behaviour hostile needs --hostile")?;
                Behaviour::Hostile(Box::new(serde_json::from_str(plan).context("--hostile is not a plan")?))
            }
        })
    }
}

/// Which server the fan-out benchmark talks to: where subscribers connect and
/// how publications are made.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Rainbow: subscribers at `/connect/?channel=C` (the connect hook of
    /// `rainbow-bench backend` subscribes them), publications by signed
    /// `POST /send/?channel=C&msgtype=T&qos=Q`.
    Rainbow,
    /// nginx + Nchan: subscribers at `/sub/C` (`nchan_subscriber websocket`),
    /// publications by `POST /pub/C` (`nchan_publisher`).
    Nchan,
    /// Pushpin: subscribers at `/C` (its route to `rainbow-bench backend`
    /// subscribes them over WebSocket-over-HTTP), publications by
    /// `POST http://127.0.0.1:5561/publish/` with a `ws-message` item.
    Pushpin,
    /// `rainbow-bench floor`: Nchan's URLs and frames (`/sub/C`, `POST /pub/C`).
    Floor,
}

/// How Rainbow API calls are signed (docs/protocol.md §7).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureVersion {
    /// SHA-1 of token, timestamp and nonce: for gateways older than v2
    /// signatures.
    V1,
    /// HMAC-SHA256 over the request.
    V2,
}

/// `rainbow-bench fanout`.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscriber connections (`--connections`), their opening rate and where they go
    /// (`--url`, a template: `{channel}` is replaced; for Rainbow `channel={channel}`
    /// is added to the query when the URL does not mention it).
    #[command(flatten)]
    pub load: LoadArgs,
    /// The server's kind: decides the subscribe and publish formats and default URLs.
    #[arg(long, value_enum, default_value_t = TargetKind::Rainbow)]
    pub target: TargetKind,
    /// Channel name (letters, digits, `-_.:`); default `bench-PID`.
    #[arg(long)]
    pub channel: Option<String>,
    /// Publish URL template (`{channel}` is replaced). Default: Rainbow
    /// `http://HOST:PORT/send/` of `--url`, Nchan `http://HOST:PORT/pub/{channel}`,
    /// Pushpin `http://127.0.0.1:5561/publish/`.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Rainbow's `security_token`, to sign `/send/` calls.
    #[arg(long, default_value = "bench")]
    pub token: String,
    /// Rainbow: how `/send/` calls are signed; v1 for a gateway older than
    /// v2 signatures.
    #[arg(long, value_enum, default_value_t = SignatureVersion::V2)]
    pub signature: SignatureVersion,
    /// Rainbow: qos of the publications (0 or 1; subscribers acknowledge qos 1).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Rainbow: message type of the publications.
    #[arg(long, default_value_t = 1001)]
    pub message_type: u16,
    /// Payload size, bytes (the stamp alone is about 50).
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Publications per second (each reaches every subscriber).
    #[arg(long, default_value_t = 10.0)]
    pub publish_rate: f64,
    /// Offered deliveries per second instead of --publish-rate (publish rate = this / subscribers).
    #[arg(long)]
    pub deliveries_per_sec: Option<f64>,
    /// Publish calls in flight at most (one keep-alive connection each).
    /// Default 1, which keeps publications in order; more for qos 1, whose
    /// calls wait for every subscriber's ACK.
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Seconds one publish call may take.
    #[arg(long, default_value_t = 15.0)]
    pub publish_timeout: f64,
    /// Seconds of publishing per step.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Raise the rate step by step (× --step-factor) until deliveries lag.
    #[arg(long)]
    pub find_saturation: bool,
    /// Rate factor between saturation steps.
    #[arg(long, default_value_t = 1.5)]
    pub step_factor: f64,
    /// Saturation steps at most.
    #[arg(long, default_value_t = 12)]
    pub max_steps: usize,
    /// A step lags when more than 1 % of its deliveries take longer than this (ms),
    /// when it achieves less than 95 % of the offered deliveries/s, or loses any.
    #[arg(long, default_value_t = 500.0)]
    pub lag_ms: f64,
    /// Seconds to wait after a step's last publication for its deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Seconds of rest between steps.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// Seconds the warm-up may take (publishing until every subscriber got one).
    #[arg(long, default_value_t = 30.0)]
    pub warmup_timeout: f64,
    /// Process ids of the server (repeatable): their CPU time and RSS are reported.
    #[arg(long)]
    pub pid: Vec<u32>,
}

/// `rainbow-bench rpc`.
#[derive(Args, Debug, Clone)]
pub struct RpcArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:1984/connect/")]
    pub url: String,
    /// Client connections (each one a closed loop).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub clients: usize,
    /// Source addresses to spread connections over: a range A-B, a comma list, or `none`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.40")]
    pub sources: Sources,
    /// Allow a gateway address outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Requests outstanding per client (1 = closed loop).
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Requests per second per client (0 = as fast as the window allows). A
    /// paced client sends one request every 1/rate s (starts spread over
    /// that interval), and only while fewer than --window are outstanding.
    #[arg(long, default_value_t = 0.0)]
    pub rate_per_client: f64,
    /// Message type (the forward hook's `{message_type}`).
    #[arg(long, default_value_t = 1)]
    pub message_type: u16,
    /// Payload size, bytes.
    #[arg(long, default_value_t = 32)]
    pub payload_size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds of measuring.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds before an unanswered request counts as failed.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Also run the same load straight at this backend URL over HTTP keep-alive
    /// (e.g. `http://127.0.0.1:PORT/message/1/`), for the gateway's overhead.
    #[arg(long)]
    pub direct_url: Option<String>,
    /// Run only the direct baseline (needs --direct-url).
    #[arg(long)]
    pub direct_only: bool,
    /// The gateway's process id (CPU time and RSS are reported).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The backend's process id (CPU time is reported).
    #[arg(long)]
    pub backend_pid: Option<u32>,
}

/// `rainbow-bench churn`.
#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Connections held (`--connections`) and their opening.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Fraction of the connections closed and reopened per second.
    #[arg(long, default_value_t = 0.05)]
    pub fraction: f64,
    /// Seconds of churn after every connection opened.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_every: f64,
    /// Seconds into the churn at which the reference RSS is taken.
    #[arg(long, default_value_t = 60.0)]
    pub baseline_at: f64,
    /// The gateway's process id (its /proc/PID/status is read). With several
    /// `--url`s, this one process's RSS is divided by every connection: give
    /// several URLs only when this process serves them all.
    #[arg(long)]
    pub pid: u32,
}

/// `rainbow-bench hostile`.
#[derive(Args, Debug, Clone)]
pub struct HostileArgs {
    /// Hostile connections (`--connections`, default 1000), their start rate
    /// and where they go (`--url`: the gateway's `/connect/` URL; the HTTP
    /// attacks use its host and port).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Attacks to cycle through, in turn: `all`, or a comma list of silent,
    /// slowloris, stalled-body, stalled-body-signed, dup-flood, rel-flood,
    /// ping-flood, big-header.
    #[arg(long, default_value = "all")]
    pub attacks: String,
    /// Seconds one attempt lasts at most (the gateway may end it sooner).
    /// The connections' first attempts start spread over this time.
    #[arg(long, default_value_t = 30.0)]
    pub attack_secs: f64,
    /// Seconds between an attempt's end and the next attempt.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// Seconds the whole run lasts (starts included); SIGTERM or SIGINT ends
    /// it sooner, still with its result.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Slowloris: seconds between the bytes of the endless request head.
    #[arg(long, default_value_t = 1.0)]
    pub slowloris_every: f64,
    /// Stalled body: body bytes per second (the body never completes).
    #[arg(long, default_value_t = 10.0)]
    pub body_rate: f64,
    /// Stalled body: the `Content-Length` announced.
    #[arg(long, default_value_t = 1_000_000)]
    pub content_length: u64,
    /// Dup-flood: payload bytes of the qos-2 SEND (the backend should echo it).
    #[arg(long, default_value_t = 131_072)]
    pub dup_payload: usize,
    /// Dup-flood: duplicates (the same SEND with dup = 1) per second.
    #[arg(long, default_value_t = 500.0)]
    pub dup_rate: f64,
    /// Dup-flood: message type of the SEND.
    #[arg(long, default_value_t = 1)]
    pub message_type: u16,
    /// Rel-flood: REL packets (for ids never used) per second.
    #[arg(long, default_value_t = 5000.0)]
    pub rel_rate: f64,
    /// Ping-flood: pings (125-byte payloads) per second.
    #[arg(long, default_value_t = 1000.0)]
    pub ping_rate: f64,
    /// Big-header: the payload length the lone frame header announces.
    #[arg(long, default_value_t = 1 << 20)]
    pub big_header_len: u64,
    /// The gateway's `security_token`, to sign the stalled-body-signed requests.
    #[arg(long, default_value = "bench")]
    pub token: String,
    /// Channel of the stalled `/send/` requests.
    #[arg(long, default_value = "hostile")]
    pub channel: String,
    /// The gateway's process id: its RSS and CPU time are reported.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// `rainbow-bench backend`.
#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Port to listen on (0 = a free one; the JSON line says which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Body of the answer to forward-hook POSTs.
    #[arg(long, default_value = r#"{"ok":true}"#)]
    pub reply: String,
    /// Answer forward-hook POSTs with their own body instead of --reply.
    #[arg(long)]
    pub echo: bool,
}

/// `rainbow-bench floor`.
#[derive(Args, Debug, Clone)]
pub struct FloorArgs {
    /// Port to listen on (0 = a free one; the JSON line says which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Threads writing each publication (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Relay WebSocket clients (any path but `/sub/C`) to this backend URL,
    /// one HTTP POST per SEND, for `rpc`; without it they are refused.
    #[arg(long)]
    pub forward: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn idle_needs_a_pid() {
        assert!(Cli::try_parse_from(["rainbow-bench", "idle", "--connections", "5"]).is_err());
        let cli = Cli::try_parse_from(["rainbow-bench", "idle", "-n", "5", "--pid", "1", "--sources", "none"])
            .expect("parses");
        let Command::Idle(args) = cli.command else { panic!("not idle") };
        assert_eq!((args.load.connections, args.pid, args.hold), (5, 1, 20));
        assert!(args.load.sources.is_empty());
    }
}
