//! The benchmarks, built on a [`Fleet`].
//!
//! - [`idle`]: warm the gateway up with a few connections, read its RSS, open
//!   N connections, hold them idle, read its RSS again, divide.
//! - [`connect`]: open N connections at a rate and time the handshakes.
//! - [`worker`]: one share of any run, in a worker process, reporting JSON lines.
//!
//! The other runs live in their own modules ([`crate::fanout`],
//! [`crate::rpc`], [`crate::churn`]) and use the helpers here.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::{ConnectArgs, IdleArgs, LoadArgs, WorkerArgs};
use crate::conn::Target;
use crate::engine::{self, Behaviour, Plan, Sink};
use crate::fleet::{Fleet, LoadSpec, Share, split};
use crate::procfs::{self, Proc};
use crate::progress::Bars;
use crate::report::{self, ConnectResult, FinishTotals, IdleResult, OpenTotals, round1, round3};

/// Open files kept free for everything that is not a client socket.
const FD_RESERVE: u64 = 512;

/// Checks the load settings and resolves the gateway. Returns the spec and
/// the number of connections one process may hold.
pub async fn load_spec(load: &LoadArgs) -> anyhow::Result<(LoadSpec, usize)> {
    load_spec_for(load, &load.urls, Behaviour::Idle).await
}

/// [`load_spec`] for connections to `urls` (which may differ from
/// `load.urls`, e.g. with a channel filled in) doing `behaviour`.
pub async fn load_spec_for(
    load: &LoadArgs,
    urls: &[String],
    behaviour: Behaviour,
) -> anyhow::Result<(LoadSpec, usize)> {
    if load.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !load.rate.is_finite() || load.rate < 0.0 {
        bail!("--rate must be a number ≥ 0 (0 = unpaced)");
    }
    if !load.handshake_timeout.is_finite() || load.handshake_timeout <= 0.0 {
        bail!("--handshake-timeout must be a positive number of seconds");
    }
    let targets = resolve_all(urls, load.allow_remote).await?;
    let mut per_process = load.per_process.max(1);
    if let Some(limit) = procfs::open_files_limit() {
        let room = usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX).max(1);
        per_process = per_process.min(room);
    }
    let spec = LoadSpec {
        targets,
        concurrency: load.concurrency.max(1),
        sources: load.sources.clone(),
        handshake_timeout: Duration::from_secs_f64(load.handshake_timeout),
        device_prefix: format!("bench-{}", std::process::id()),
        behaviour,
        worker_threads: load.worker_threads,
    };
    Ok((spec, per_process))
}

/// Resolves every URL (at least one), refusing addresses outside loopback
/// unless `allow_remote`.
pub async fn resolve_all(urls: &[String], allow_remote: bool) -> anyhow::Result<Vec<Arc<Target>>> {
    if urls.is_empty() {
        bail!("give at least one --url");
    }
    let mut targets = Vec::with_capacity(urls.len());
    for url in urls {
        let target = Target::resolve(url).await?;
        if !allow_remote && !target.addr().ip().is_loopback() {
            bail!(
                "{url} resolves to {}, outside loopback; load tests go to 127.0.0.0/8 or ::1 (--allow-remote overrides)",
                target.addr().ip()
            );
        }
        targets.push(Arc::new(target));
    }
    Ok(targets)
}

/// Starts a fleet: this process for one share, workers for several.
pub fn start(spec: &LoadSpec, shares: &[Share]) -> anyhow::Result<Fleet> {
    match shares {
        [one] => Ok(Fleet::local(spec.plan(*one))),
        many => Fleet::spawn(spec, many),
    }
}

/// Waits for every share to finish opening, with a bar.
pub async fn open_all(fleet: &mut Fleet, bars: Bars, prefix: &str, count: usize) -> anyhow::Result<OpenTotals> {
    let bar = bars.connections(prefix, count as u64);
    let parts = fleet
        .opened(|p| {
            bar.set_position(p.ok + p.failed);
            if p.failed > 0 {
                bar.set_message(format!("({} failed)", p.failed));
            }
        })
        .await;
    bar.finish();
    report::merge_opened(&parts?)
}

/// The bench's own RSS, peak RSS and CPU seconds over all its processes.
pub fn own_figures(fleet: &Fleet, finish: &FinishTotals) -> (u64, u64, f64) {
    if fleet.is_local() {
        // The share ran here: its report already is this process.
        (finish.rss_kib, finish.peak_rss_kib, finish.cpu_seconds)
    } else {
        let mem = procfs::memory(Proc::Current).unwrap_or_default();
        let cpu = procfs::cpu_seconds(Proc::Current).unwrap_or(0.0);
        (finish.rss_kib + mem.rss_kib, finish.peak_rss_kib + mem.peak_kib, finish.cpu_seconds + cpu)
    }
}

/// The gateway's memory figures, with a helpful error.
pub fn gateway_memory(pid: u32) -> anyhow::Result<procfs::Memory> {
    procfs::memory(Proc::Pid(pid)).with_context(|| {
        format!("cannot read /proc/{pid}/status: is {pid} the gateway's process id, and is it running?")
    })
}

/// The gateway's CPU seconds so far, with a helpful error.
pub fn gateway_cpu(pid: u32) -> anyhow::Result<f64> {
    procfs::cpu_seconds(Proc::Pid(pid)).with_context(|| format!("cannot read /proc/{pid}/stat"))
}

/// `rainbow-bench idle`: the gateway's resident memory per idle connection.
pub async fn idle(args: &IdleArgs) -> anyhow::Result<IdleResult> {
    let started = Instant::now();
    let (spec, per_process) = load_spec(&args.load).await?;
    let bars = Bars::new(!args.load.no_progress);
    gateway_memory(args.pid)?;

    if args.warmup > 0 {
        let warm = LoadSpec { device_prefix: format!("{}-warmup", spec.device_prefix), ..spec.clone() };
        let mut fleet = Fleet::local(warm.plan(Share { first_index: 0, count: args.warmup, rate: 0.0 }));
        let opened = report::merge_opened(&fleet.opened(|_| {}).await?)?;
        fleet.release().await?;
        if opened.failed > 0 {
            bail!(
                "{} of {} warm-up connections failed ({:?}); is the gateway at {} accepting connections?",
                opened.failed,
                args.warmup,
                opened.errors,
                args.load.url_label()
            );
        }
        if args.settle > 0.0 && args.settle.is_finite() {
            tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        }
    }
    let before = gateway_memory(args.pid)?;
    let cpu_before = gateway_cpu(args.pid)?;

    let shares = split(args.load.connections, args.load.rate, per_process);
    let mut fleet = start(&spec, &shares)?;
    let opened = open_all(&mut fleet, bars, "connecting", args.load.connections).await?;

    let hold_bar = bars.seconds("holding", args.hold);
    let hold_start = Instant::now();
    let mut max_rss = before.rss_kib;
    fleet
        .hold(Duration::from_secs(args.hold), |p| {
            if let Ok(m) = procfs::memory(Proc::Pid(args.pid)) {
                max_rss = max_rss.max(m.rss_kib);
                hold_bar.set_message(format!("gateway RSS {} KiB, {} open", m.rss_kib, p.ok.saturating_sub(p.dropped)));
            }
            hold_bar.set_position(hold_start.elapsed().as_secs().min(args.hold));
        })
        .await?;
    let after = gateway_memory(args.pid)?;
    let cpu_after = gateway_cpu(args.pid)?;
    hold_bar.set_position(args.hold);
    hold_bar.finish();
    max_rss = max_rss.max(after.rss_kib);

    let finish = report::merge_finished(&fleet.release().await?);
    let (bench_rss_kib, bench_peak_rss_kib, bench_cpu_seconds) = own_figures(&fleet, &finish);
    let grown_kib = after.rss_kib as f64 - before.rss_kib as f64;
    let per_connection = (finish.alive > 0).then(|| round1(grown_kib * 1024.0 / finish.alive as f64));
    bars.note(&format!(
        "idle: {} held ({} failed, {} dropped); gateway RSS {} -> {} KiB = {} bytes per connection",
        finish.alive,
        opened.failed,
        finish.dropped,
        before.rss_kib,
        after.rss_kib,
        per_connection.map_or("n/a".to_string(), |b| b.to_string())
    ));
    Ok(IdleResult {
        bench: "idle",
        url: args.load.url_label(),
        pid: args.pid,
        connections: args.load.connections as u64,
        connections_ok: opened.ok,
        connections_failed: opened.failed,
        connections_dropped: finish.dropped,
        connections_held: finish.alive,
        rate: args.load.rate,
        sources: spec.sources.len(),
        processes: fleet.processes() + usize::from(!fleet.is_local()),
        hold_secs: args.hold,
        warmup: args.warmup as u64,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        rss_max_during_hold_kib: max_rss,
        rss_peak_kib: after.peak_kib,
        rss_anon_before_kib: before.anon_kib,
        rss_anon_after_kib: after.anon_kib,
        rss_per_connection_bytes: per_connection,
        gateway_cpu_seconds: round3(cpu_after - cpu_before),
        open_secs: round3(opened.open_secs),
        latency: opened.latency,
        elapsed: round3(started.elapsed().as_secs_f64()),
        bench_rss_kib,
        bench_peak_rss_kib,
        bench_cpu_seconds: round3(bench_cpu_seconds),
        errors: opened.errors,
        drops: finish.drops,
    })
}

/// `rainbow-bench connect`: handshake rate and latency.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<ConnectResult> {
    let started = Instant::now();
    let (spec, per_process) = load_spec(&args.load).await?;
    let bars = Bars::new(!args.load.no_progress);
    let before = match args.pid {
        Some(pid) => Some((gateway_memory(pid)?, gateway_cpu(pid)?)),
        None => None,
    };

    let shares = split(args.load.connections, args.load.rate, per_process);
    let mut fleet = start(&spec, &shares)?;
    let opened = open_all(&mut fleet, bars, "connecting", args.load.connections).await?;
    let after = match args.pid {
        Some(pid) => Some((gateway_memory(pid)?, gateway_cpu(pid)?)),
        None => None,
    };
    let finish = report::merge_finished(&fleet.release().await?);
    let (bench_rss_kib, _, bench_cpu_seconds) = own_figures(&fleet, &finish);
    let rate = if opened.open_secs > 0.0 { opened.ok as f64 / opened.open_secs } else { 0.0 };
    bars.note(&format!(
        "connect: {} ok, {} failed, {:.0} handshakes/s, p50 {} ms, p99 {} ms, max {} ms",
        opened.ok, opened.failed, rate, opened.latency.p50_ms, opened.latency.p99_ms, opened.latency.max_ms
    ));
    Ok(ConnectResult {
        bench: "connect",
        url: args.load.url_label(),
        connections: args.load.connections as u64,
        connections_ok: opened.ok,
        connections_failed: opened.failed,
        rate: args.load.rate,
        concurrency: spec.concurrency,
        sources: spec.sources.len(),
        processes: fleet.processes() + usize::from(!fleet.is_local()),
        handshakes_per_sec: round1(rate),
        latency_p50_ms: opened.latency.p50_ms,
        latency_p90_ms: opened.latency.p90_ms,
        latency_p99_ms: opened.latency.p99_ms,
        latency_max_ms: opened.latency.max_ms,
        latency_mean_ms: opened.latency.mean_ms,
        open_secs: round3(opened.open_secs),
        elapsed: round3(started.elapsed().as_secs_f64()),
        gateway_cpu_seconds: before.zip(after).map(|((_, c0), (_, c1))| round3(c1 - c0)),
        gateway_rss_before_kib: before.map(|(m, _)| m.rss_kib),
        gateway_rss_after_kib: after.map(|(m, _)| m.rss_kib),
        bench_rss_kib,
        bench_cpu_seconds: round3(bench_cpu_seconds),
        errors: opened.errors,
    })
}

/// `rainbow-bench worker`: runs one share, printing [`engine::Event`]s as JSON
/// lines on stdout; a line or end of file on stdin releases the connections.
pub async fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    // The parent checked the addresses; a worker only follows its orders.
    let targets = resolve_all(&args.urls, true).await?;
    let behaviour = args.behaviour()?;
    let plan = Plan {
        targets,
        count: args.connections,
        first_index: args.first_index,
        rate: if args.rate.is_finite() && args.rate > 0.0 { args.rate } else { 0.0 },
        concurrency: args.concurrency.max(1),
        sources: args.sources.clone(),
        handshake_timeout: Duration::from_secs_f64(args.handshake_timeout.max(0.001)),
        device_prefix: args.device_prefix.clone(),
        behaviour,
    };
    let sink: Sink = Arc::new(|event| {
        if let Ok(line) = serde_json::to_string(&event) {
            let mut out = std::io::stdout().lock();
            // If the parent is gone there is nobody to tell; stdin's end releases us.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    });
    let release = async {
        let mut line = String::new();
        let _ = BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
    };
    engine::run(plan, sink, release).await
}
