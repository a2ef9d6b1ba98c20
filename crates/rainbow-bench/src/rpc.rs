//! `rainbow-bench rpc`: qos-1 round trips through the gateway to a backend,
//! and the same load straight at the backend, for the gateway's overhead.
//!
//! - Through the gateway: C client connections (a fleet with the
//!   [`Behaviour::Rpc`] behaviour) each keep `--window` qos-1 SENDs
//!   outstanding (or, with `--rate-per-client`, send one every 1/rate s
//!   while the window allows: an ordinary, modest load rather than the
//!   most the gateway can take); the gateway forwards each to its `forward_url` (normally
//!   `rainbow-bench backend`) and turns the answer into the ACK. After
//!   `--warmup` seconds each process measures for `--duration` seconds.
//! - Direct (`--direct-url`): C × window HTTP/1.1 keep-alive connections from
//!   this process, each POSTing the same payload to the backend in a closed
//!   loop, with the query and headers the gateway's forward call carries,
//!   measured the same way.
//!
//! The result has both, and the overhead: p50 through the gateway − p50
//! direct, and the throughput ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hyper::Method;
use serde::Serialize;

use crate::cli::{RpcArgs, seconds};
use crate::clients::{RpcPlan, rpc_payload};
use crate::engine::Behaviour;
use crate::fleet::split;
use crate::http::{Client, HttpUrl};
use crate::latency::{self, Recorder};
use crate::procfs::{self, Proc};
use crate::progress::Bars;
use crate::report::{self, Latency, round1, round3};
use crate::runs::{load_spec_for, open_all, own_figures, start};
use crate::sign;
use crate::stats::RPC_HISTOGRAM;

/// One measured rpc load, through the gateway or direct.
#[derive(Debug, Clone, Serialize)]
pub struct RpcLeg {
    /// Concurrent closed loops (clients × window).
    pub concurrency: usize,
    /// Round trips completed inside the window.
    pub round_trips: u64,
    /// Requests that failed or got no answer in time (whole run).
    pub failed: u64,
    /// The window's length, seconds.
    pub window_secs: f64,
    /// Round trips per second inside the window.
    pub round_trips_per_sec: f64,
    /// Round-trip latency inside the window.
    pub latency: Latency,
    /// Median round trip, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Gateway CPU seconds during the run (with --pid; through the gateway only).
    pub gateway_cpu_seconds: Option<f64>,
    /// Backend CPU seconds during the run (with --backend-pid).
    pub backend_cpu_seconds: Option<f64>,
    /// The bench's own CPU seconds during the run.
    pub bench_cpu_seconds: f64,
    /// Non-idle CPU seconds of the whole machine during the run (every process).
    pub machine_cpu_seconds: f64,
}

/// The result of `rainbow-bench rpc`.
#[derive(Debug, Clone, Serialize)]
pub struct RpcResult {
    /// Always `"rpc"`.
    pub bench: &'static str,
    /// The gateway URL.
    pub url: String,
    /// The direct backend URL, if measured.
    pub direct_url: Option<String>,
    /// Client connections.
    pub clients: usize,
    /// Requests outstanding per client.
    pub window: usize,
    /// Requests per second per client (absent: closed loop).
    pub rate_per_client: Option<f64>,
    /// Payload bytes.
    pub payload_size: usize,
    /// Through the gateway (absent with --direct-only).
    pub gateway: Option<RpcLeg>,
    /// Straight at the backend (with --direct-url).
    pub direct: Option<RpcLeg>,
    /// Gateway p50 − direct p50, microseconds (with both).
    pub overhead_p50_us: Option<f64>,
    /// Gateway round trips/s ÷ direct round trips/s (with both).
    pub throughput_ratio: Option<f64>,
    /// Client connections that could not be opened.
    pub connections_failed: u64,
    /// Client connections that ended during the run.
    pub connections_dropped: u64,
    /// The bench's own RSS (all its processes), KiB.
    pub bench_rss_kib: u64,
    /// Seconds the whole run took.
    pub elapsed: f64,
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|p| procfs::cpu_seconds(Proc::Pid(p)).ok())
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    before.zip(after).map(|(a, b)| round3(b - a))
}

fn leg(concurrency: usize, round_trips: u64, failed: u64, window_secs: f64, latency: Latency) -> RpcLeg {
    RpcLeg {
        concurrency,
        round_trips,
        failed,
        window_secs: round3(window_secs),
        round_trips_per_sec: round1(if window_secs > 0.0 { round_trips as f64 / window_secs } else { 0.0 }),
        p50_us: round1(latency.p50_ms * 1000.0),
        p99_us: round1(latency.p99_ms * 1000.0),
        latency,
        gateway_cpu_seconds: None,
        backend_cpu_seconds: None,
        bench_cpu_seconds: 0.0,
        machine_cpu_seconds: 0.0,
    }
}

/// Through the gateway. Returns the leg, open failures, drops, bench RSS.
async fn through_gateway(args: &RpcArgs, plan: RpcPlan, bars: Bars) -> anyhow::Result<(RpcLeg, u64, u64, u64)> {
    let load = args.load();
    let (spec, per_process) = load_spec_for(&load, &load.urls, Behaviour::Rpc(plan.clone())).await?;
    let (gw0, be0) = (cpu(args.pid), cpu(args.backend_pid));
    let bench0 = procfs::cpu_seconds(Proc::Current).unwrap_or(0.0);
    let machine0 = procfs::machine_cpu_seconds().unwrap_or(0.0);
    let shares = split(load.connections, 0.0, per_process);
    let mut fleet = start(&spec, &shares)?;
    let opened = open_all(&mut fleet, bars, "connecting", load.connections).await?;
    if opened.ok == 0 {
        bail!("no rpc client could connect to {}: {:?}", load.url_label(), opened.errors);
    }
    let processes = fleet.processes() as u64;
    let bar = bars.seconds("rpc", (plan.warmup + plan.measure).as_secs());
    let began = Instant::now();
    let limit = tokio::time::Instant::now() + plan.warmup + plan.measure + Duration::from_secs(10);
    fleet
        .wait_until(
            limit,
            |f| f.stats().rpc_windows_done >= processes,
            |f| {
                bar.set_position(began.elapsed().as_secs());
                bar.set_message(format!("{} round trips", f.stats().rpc_done));
            },
        )
        .await?;
    bar.finish();
    let stats = fleet.stats();
    let (gw1, be1) = (cpu(args.pid), cpu(args.backend_pid));
    let workers_cpu: f64 = fleet.worker_pids().iter().map(|&p| procfs::cpu_seconds(Proc::Pid(p)).unwrap_or(0.0)).sum();
    let bench1 = procfs::cpu_seconds(Proc::Current).unwrap_or(0.0) + workers_cpu;
    let machine1 = procfs::machine_cpu_seconds().unwrap_or(0.0);
    let finished = fleet.release().await?;
    let finish = report::merge_finished(&finished);
    let (bench_rss, _, _) = own_figures(&fleet, &finish);
    let parts: Vec<&[(u64, u64)]> =
        finished.iter().filter_map(|f| f.histograms.get(RPC_HISTOGRAM)).map(Vec::as_slice).collect();
    let (latency, _) = latency::summarise(parts)?;
    let concurrency = opened.ok as usize * plan.window.max(1);
    let mut result = leg(concurrency, stats.rpc_window, stats.rpc_failed, stats.rpc_window_secs, latency);
    result.gateway_cpu_seconds = delta(gw0, gw1);
    result.backend_cpu_seconds = delta(be0, be1);
    result.bench_cpu_seconds = round3(bench1 - bench0);
    result.machine_cpu_seconds = round3(machine1 - machine0);
    Ok((result, opened.failed, finish.dropped, bench_rss))
}

/// Straight at the backend over HTTP keep-alive.
async fn direct(args: &RpcArgs, url: &str, plan: &RpcPlan, bars: Bars) -> anyhow::Result<RpcLeg> {
    let target = HttpUrl::resolve(url).await?;
    if !args.allow_remote && !target.addr().ip().is_loopback() {
        bail!("{url} is outside loopback (--allow-remote overrides)");
    }
    // What the gateway's forward call carries (docs/protocol.md §4): a signed query, the
    // identity header and the form content type.
    let sep = if target.path().contains('?') { '&' } else { '?' };
    let path = format!("{}{sep}{}", target.path(), sign::query("bench", &sign::Nonces::new()));
    let identity = "0".repeat(64);
    let payload = rpc_payload(plan.payload_size);
    let concurrency = args.clients.max(1) * plan.window.clamp(1, 1024);
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, window_count, failed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let recorder = Arc::new(Recorder::new());
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut c = Client::new(target.clone());
        c.warm().await?;
        clients.push(c);
    }
    let (be0, bench0) = (cpu(args.backend_pid), procfs::cpu_seconds(Proc::Current).unwrap_or(0.0));
    let machine0 = procfs::machine_cpu_seconds().unwrap_or(0.0);
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let (url, path, identity, payload) = (target.clone(), path.clone(), identity.clone(), payload.clone());
        let (recording, stop, done, window_count, failed, recorder) =
            (recording.clone(), stop.clone(), done.clone(), window_count.clone(), failed.clone(), recorder.clone());
        let timeout = plan.timeout;
        tasks.spawn(async move {
            let headers =
                [("content-type", "application/x-www-form-urlencoded"), ("rainbowclientidentity", identity.as_str())];
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let answer =
                    tokio::time::timeout(timeout, client.request(Method::POST, &path, &headers, payload.clone())).await;
                match answer {
                    Ok(Ok(a)) if a.status == 200 => {
                        let rtt = sent.elapsed();
                        done.fetch_add(1, Ordering::Relaxed);
                        if recording.load(Ordering::Relaxed) {
                            window_count.fetch_add(1, Ordering::Relaxed);
                            recorder.record_duration(rtt);
                        }
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // The connection may be mid-response: start a fresh one.
                        client = Client::new(url.clone());
                    }
                }
            }
        });
    }
    let bar = bars.seconds("direct", (plan.warmup + plan.measure).as_secs());
    let began = Instant::now();
    tokio::time::sleep(plan.warmup).await;
    recording.store(true, Ordering::Relaxed);
    let window_start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while window_start.elapsed() < plan.measure {
        tick.tick().await;
        bar.set_position(began.elapsed().as_secs());
        bar.set_message(format!("{} round trips", done.load(Ordering::Relaxed)));
    }
    recording.store(false, Ordering::Relaxed);
    let window_secs = window_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (be1, bench1) = (cpu(args.backend_pid), procfs::cpu_seconds(Proc::Current).unwrap_or(0.0));
    let machine1 = procfs::machine_cpu_seconds().unwrap_or(0.0);
    bar.finish();
    // Clients finish their last request (bounded by the timeout).
    let _ = tokio::time::timeout(plan.timeout + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let (latency, _) = latency::summarise([recorder.pairs().as_slice()])?;
    let mut result =
        leg(concurrency, window_count.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), window_secs, latency);
    result.backend_cpu_seconds = delta(be0, be1);
    result.bench_cpu_seconds = round3(bench1 - bench0);
    result.machine_cpu_seconds = round3(machine1 - machine0);
    Ok(result)
}

/// `rainbow-bench rpc`.
pub async fn rpc(args: &RpcArgs) -> anyhow::Result<RpcResult> {
    let started = Instant::now();
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.direct_only && args.direct_url.is_none() {
        bail!("--direct-only needs --direct-url");
    }
    if !(args.rate_per_client.is_finite() && (0.0..=1e6).contains(&args.rate_per_client)) {
        bail!("--rate-per-client must be between 0 (closed loop) and 10^6");
    }
    let interval = (args.rate_per_client > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate_per_client));
    if interval.is_some() && args.direct_url.is_some() {
        bail!("--direct-url measures a closed loop; it does not go with --rate-per-client");
    }
    let plan = RpcPlan {
        window: args.window.clamp(1, 1024),
        message_type: args.message_type,
        payload_size: args.payload_size,
        timeout: seconds("timeout", args.timeout)?,
        warmup: seconds("warmup", args.warmup)?,
        measure: seconds("duration", args.duration)?,
        interval,
    };
    if plan.measure.is_zero() {
        bail!("--duration must be above 0");
    }
    let bars = Bars::new(!args.no_progress);
    let (mut gateway, mut failed, mut dropped, mut bench_rss) = (None, 0, 0, 0);
    if !args.direct_only {
        let (leg, f, d, rss) = through_gateway(args, plan.clone(), bars).await?;
        bars.note(&format!(
            "rpc via gateway: {:.0} round trips/s, p50 {} µs, p99 {} µs, {} failed",
            leg.round_trips_per_sec, leg.p50_us, leg.p99_us, leg.failed
        ));
        (gateway, failed, dropped, bench_rss) = (Some(leg), f, d, rss);
    }
    let mut direct_leg = None;
    if let Some(url) = &args.direct_url {
        let leg = direct(args, url, &plan, bars).await?;
        bars.note(&format!(
            "rpc direct: {:.0} round trips/s, p50 {} µs, p99 {} µs, {} failed",
            leg.round_trips_per_sec, leg.p50_us, leg.p99_us, leg.failed
        ));
        bench_rss = bench_rss.max(procfs::memory(Proc::Current).map(|m| m.rss_kib).unwrap_or(0));
        direct_leg = Some(leg);
    }
    let overhead = gateway.as_ref().zip(direct_leg.as_ref()).map(|(g, d)| round1(g.p50_us - d.p50_us));
    let ratio = gateway.as_ref().zip(direct_leg.as_ref()).and_then(|(g, d)| {
        (d.round_trips_per_sec > 0.0).then(|| round3(g.round_trips_per_sec / d.round_trips_per_sec))
    });
    Ok(RpcResult {
        bench: "rpc",
        url: args.url.clone(),
        direct_url: args.direct_url.clone(),
        clients: args.clients,
        window: plan.window,
        rate_per_client: interval.map(|_| args.rate_per_client),
        payload_size: args.payload_size,
        gateway,
        direct: direct_leg,
        overhead_p50_us: overhead,
        throughput_ratio: ratio,
        connections_failed: failed,
        connections_dropped: dropped,
        bench_rss_kib: bench_rss,
        elapsed: round3(started.elapsed().as_secs_f64()),
    })
}
