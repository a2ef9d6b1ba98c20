//! `rainbow-bench fanout`: N subscribers on one channel, publications at a
//! rate, against Rainbow, Nchan or Pushpin.
//!
//! 1. Opens N subscriber connections (split over worker processes above
//!    `--per-process`), each running [`crate::clients::subscribe`].
//! 2. Warm-up (step 0): publishes a few publications until every subscriber
//!    has received one, so every subscription is known to be in place.
//! 3. Each step publishes at a rate for `--duration` seconds, with at most
//!    `--publishers` calls in flight (one keep-alive connection each), then
//!    waits up to `--drain` seconds for the step's deliveries. Every payload
//!    is stamped ([`crate::stamp`]) with its sequence number, step and send
//!    time, so subscribers time publish-to-receipt latency per step and
//!    notice gaps.
//! 4. With `--find-saturation` the rate grows by `--step-factor` per step
//!    until a step lags ([`StepResult::lagging`]).
//!
//! A step's achieved deliveries/s is its deliveries divided by the time from
//! its first publication to its last delivery (at least the scheduled
//! publishing time), so a server that falls behind shows a lower figure even
//! when it delivers everything in the end.
//! Lost = accepted publications × subscribers − deliveries.
//!
//! [`Peer`] holds what differs between the servers: the subscribe URL, and
//! the publish call (signed `/send/`, Nchan's `/pub/C`, Pushpin's
//! `/publish/` with a `ws-message` item).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::cli::{FanoutArgs, SignatureVersion, TargetKind, seconds};
use crate::engine::{Behaviour, bump};
use crate::fleet::{Fleet, split};
use crate::http::{Answer, Client, HttpUrl};
use crate::latency::{self, Recorder};
use crate::procfs::{self, Proc};
use crate::progress::Bars;
use crate::report::{self, Latency, round1, round3};
use crate::runs::{load_spec_for, open_all, start};
use crate::sign::{self, Nonces};
use crate::stamp::{self, Stamp};
use crate::stats::{MAX_STEPS, step_histogram};

/// Pushpin's default publish endpoint.
pub const PUSHPIN_PUBLISH: &str = "http://127.0.0.1:5561/publish/";

/// Fraction of the offered deliveries/s a step must achieve not to lag.
pub const KEEP_UP: f64 = 0.95;

/// Fraction of late deliveries above which a step lags (p99 over the threshold).
pub const LATE_FRACTION: f64 = 0.01;

/// Warm-up publications are at least this far apart...
const WARMUP_EVERY: Duration = Duration::from_millis(250);

/// ...and this much more per subscriber: one publication reaches about
/// 65,000 subscribers a second on this machine (server and bench together),
/// so 150,000 subscribers get one publication every 2.3 s rather than a
/// backlog of ten.
const WARMUP_PER_SUBSCRIBER: Duration = Duration::from_micros(15);

/// The pause between warm-up publications for `subscribers`.
fn warmup_interval(subscribers: u64) -> Duration {
    let per = WARMUP_PER_SUBSCRIBER.saturating_mul(u32::try_from(subscribers).unwrap_or(u32::MAX));
    WARMUP_EVERY.max(per)
}

fn is_channel_name(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The subscribers' URL: `{channel}` replaced; for Rainbow, `channel=C`
/// added to the query when the template does not mention the channel.
pub fn subscribe_url(kind: TargetKind, template: &str, channel: &str) -> String {
    if template.contains("{channel}") {
        return template.replace("{channel}", channel);
    }
    match kind {
        TargetKind::Rainbow => {
            let sep = if template.contains('?') { '&' } else { '?' };
            format!("{template}{sep}channel={channel}")
        }
        TargetKind::Nchan | TargetKind::Pushpin | TargetKind::Floor => template.to_string(),
    }
}

/// The publish URL: the given template with `{channel}` replaced, or the
/// server kind's default next to the subscribers' `ws://` URL.
pub fn publish_url(kind: TargetKind, given: Option<&str>, subscribe: &str, channel: &str) -> anyhow::Result<String> {
    if let Some(given) = given {
        return Ok(given.replace("{channel}", channel));
    }
    let uri: hyper::Uri = subscribe.parse().with_context(|| format!("{subscribe:?} is not a valid URL"))?;
    let authority = uri.authority().with_context(|| format!("{subscribe:?} has no host"))?;
    Ok(match kind {
        TargetKind::Rainbow => format!("http://{authority}/send/"),
        TargetKind::Nchan | TargetKind::Floor => format!("http://{authority}/pub/{channel}"),
        TargetKind::Pushpin => PUSHPIN_PUBLISH.to_string(),
    })
}

/// How to publish to one server.
#[derive(Debug)]
pub struct Peer {
    kind: TargetKind,
    url: HttpUrl,
    channel: String,
    token: String,
    signature: SignatureVersion,
    qos: u8,
    message_type: u16,
    nonces: Nonces,
}

/// One publish call, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Path and query.
    pub path: String,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Bytes,
}

impl Peer {
    /// The publish call carrying `payload`.
    pub fn call(&self, payload: String) -> Call {
        match self.kind {
            TargetKind::Rainbow => {
                let base = self.url.path();
                let (msgtype, qos) = (self.message_type.to_string(), self.qos.to_string());
                let ours = [("channel", self.channel.as_str()), ("msgtype", msgtype.as_str()), ("qos", qos.as_str())];
                let path = match self.signature {
                    SignatureVersion::V1 => {
                        let sep = if base.contains('?') { '&' } else { '?' };
                        let signed = sign::query(&self.token, &self.nonces);
                        format!("{base}{sep}channel={}&msgtype={msgtype}&qos={qos}&{signed}", self.channel)
                    }
                    SignatureVersion::V2 => {
                        // The URL's own query is signed along with ours.
                        let (path, given) = base.split_once('?').unwrap_or((base, ""));
                        let given: Vec<(String, String)> = rainbow_protocol::signature::query_pairs(given)
                            .into_iter()
                            .map(|(k, v)| (String::from_utf8_lossy(&k).into(), String::from_utf8_lossy(&v).into()))
                            .collect();
                        let mut pairs: Vec<(&str, &str)> =
                            given.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                        pairs.extend(ours);
                        let signed =
                            sign::query_v2(&self.token, "POST", path, &pairs, payload.as_bytes(), &self.nonces);
                        format!("{path}?{signed}")
                    }
                };
                Call { path, content_type: "application/json", body: Bytes::from(payload) }
            }
            TargetKind::Nchan | TargetKind::Floor => {
                Call { path: self.url.path().to_string(), content_type: "text/plain", body: Bytes::from(payload) }
            }
            TargetKind::Pushpin => {
                let item = serde_json::json!({
                    "items": [{"channel": self.channel, "formats": {"ws-message": {"content": payload}}}]
                });
                Call {
                    path: self.url.path().to_string(),
                    content_type: "application/json",
                    body: Bytes::from(item.to_string()),
                }
            }
        }
    }

    /// Whether the server took the publication.
    pub fn accepted(&self, answer: &Answer) -> bool {
        match self.kind {
            TargetKind::Rainbow => {
                answer.status == 200
                    && serde_json::from_slice::<serde_json::Value>(&answer.body)
                        .is_ok_and(|v| v.get("status").and_then(serde_json::Value::as_i64) == Some(0))
            }
            TargetKind::Nchan | TargetKind::Pushpin | TargetKind::Floor => (200..300).contains(&answer.status),
        }
    }
}

/// The publisher's counters.
#[derive(Debug)]
struct Published {
    accepted: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Publish call latency per step.
    call_latency: Vec<Recorder>,
}

impl Default for Published {
    fn default() -> Published {
        Published {
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: Mutex::default(),
            call_latency: (0..MAX_STEPS).map(|_| Recorder::new()).collect(),
        }
    }
}

/// Publishes with at most `size` calls in flight, one keep-alive connection each.
struct Publisher {
    peer: Arc<Peer>,
    pool: Arc<Mutex<Vec<Client>>>,
    permits: Arc<Semaphore>,
    size: u32,
    payload_size: usize,
    timeout: Duration,
    counts: Arc<Published>,
}

impl Publisher {
    async fn new(peer: Peer, size: usize, payload_size: usize, timeout: Duration) -> anyhow::Result<Publisher> {
        let size = size.clamp(1, 256);
        let mut pool = Vec::with_capacity(size);
        for _ in 0..size {
            let mut client = Client::new(peer.url.clone());
            client.warm().await.with_context(|| format!("cannot reach the publish endpoint {}", peer.url.addr()))?;
            pool.push(client);
        }
        Ok(Publisher {
            peer: Arc::new(peer),
            pool: Arc::new(Mutex::new(pool)),
            permits: Arc::new(Semaphore::new(size)),
            size: size as u32,
            payload_size,
            timeout,
            counts: Arc::default(),
        })
    }

    /// Starts publishing `seq` of `step` as soon as a connection is free
    /// (waiting for one first).
    async fn publish(&self, seq: u64, step: u32) -> anyhow::Result<()> {
        let permit = self.permits.clone().acquire_owned().await.context("publisher closed")?;
        let client = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut client = client.unwrap_or_else(|| Client::new(self.peer.url.clone()));
        let (peer, pool, counts, size, timeout) =
            (self.peer.clone(), self.pool.clone(), self.counts.clone(), self.payload_size, self.timeout);
        tokio::spawn(async move {
            let payload = stamp::encode(Stamp { seq, step, ts_us: stamp::now_us() }, size);
            let call = peer.call(payload);
            let started = Instant::now();
            let headers = [("content-type", call.content_type)];
            let result =
                tokio::time::timeout(timeout, client.request(Method::POST, &call.path, &headers, call.body)).await;
            if let Some(r) = counts.call_latency.get(step as usize) {
                r.record_duration(started.elapsed());
            }
            let failure = match result {
                Ok(Ok(answer)) if peer.accepted(&answer) => None,
                Ok(Ok(answer)) => {
                    let start: String = String::from_utf8_lossy(&answer.body).chars().take(40).collect();
                    Some(format!("http {}: {start}", answer.status))
                }
                Ok(Err(e)) => Some(format!("{e:#}").chars().take(60).collect()),
                Err(_) => {
                    // The connection may be mid-response: start a fresh one.
                    client = Client::new(peer.url.clone());
                    Some("timeout".to_string())
                }
            };
            match failure {
                None => counts.accepted.fetch_add(1, Ordering::Relaxed),
                Some(label) => {
                    bump(&counts.errors, label);
                    counts.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(client);
            drop(permit);
        });
        Ok(())
    }

    /// Waits until no call is in flight.
    async fn settle(&self) -> anyhow::Result<()> {
        let _all = self.permits.acquire_many(self.size).await.context("publisher closed")?;
        Ok(())
    }

    fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }
}

/// One rate step of a fan-out run.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Step number (1, 2, ...).
    pub step: usize,
    /// Publications per second asked for.
    pub publish_rate: f64,
    /// Subscribers connected at the step's start.
    pub subscribers: u64,
    /// Offered deliveries per second: publish rate × subscribers.
    pub offered_deliveries_per_sec: f64,
    /// Publications the server accepted.
    pub published: u64,
    /// Publish calls that failed.
    pub publish_failed: u64,
    /// Seconds from the first publication to the last publish call's answer.
    pub publish_secs: f64,
    /// Accepted publications per second, as achieved.
    pub achieved_publish_rate: f64,
    /// published × subscribers.
    pub expected_deliveries: u64,
    /// Deliveries received.
    pub deliveries: u64,
    /// expected − received (0 if more arrived).
    pub lost: u64,
    /// Deliveries slower than the lag threshold.
    pub late: u64,
    /// Deliveries per second from the first publication to the last delivery.
    pub achieved_deliveries_per_sec: f64,
    /// Publish-to-receipt latency.
    pub latency: Latency,
    /// Latency of the publish calls themselves (their HTTP round trip).
    pub publish_call_latency: Latency,
    /// Whether the step lagged (see `lag_reasons`).
    pub lagging: bool,
    /// Why it lagged.
    pub lag_reasons: Vec<String>,
    /// CPU seconds of the server's processes (`--pid`) during the step and its drain.
    pub server_cpu_seconds: Option<f64>,
    /// CPU seconds of the bench's processes during the step and its drain.
    pub bench_cpu_seconds: f64,
    /// Non-idle CPU seconds of the whole machine during the step and its
    /// drain; minus the server's and the bench's, what other work used.
    pub machine_cpu_seconds: f64,
}

/// The result of `rainbow-bench fanout`.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// Always `"fanout"`.
    pub bench: &'static str,
    /// `rainbow`, `nchan`, `pushpin` or `floor`.
    pub target: String,
    /// The subscribers' URL.
    pub url: String,
    /// The publish URL.
    pub publish_url: String,
    /// The channel.
    pub channel: String,
    /// qos of the publications (Rainbow only).
    pub qos: u8,
    /// Payload bytes.
    pub payload_size: usize,
    /// Publish calls in flight at most.
    pub publishers: usize,
    /// Subscribers asked for.
    pub connections: u64,
    /// Subscribers opened.
    pub connections_ok: u64,
    /// Subscribers that could not be opened.
    pub connections_failed: u64,
    /// Subscribers that ended before the run did.
    pub connections_dropped: u64,
    /// Bench processes (1, or the parent plus its workers).
    pub processes: usize,
    /// Handshake latency of the subscribers.
    pub handshake_latency: Latency,
    /// Seconds the warm-up took.
    pub warmup_secs: f64,
    /// Whether the rate was raised until deliveries lagged.
    pub find_saturation: bool,
    /// The headline step: the only one, or with --find-saturation the one
    /// with the highest achieved deliveries/s.
    pub offered_deliveries_per_sec: f64,
    /// Achieved deliveries/s of the headline step.
    pub achieved_deliveries_per_sec: f64,
    /// Median publish-to-receipt latency of the headline step, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile of the headline step, ms.
    pub latency_p99_ms: f64,
    /// Largest of the headline step, ms.
    pub latency_max_ms: f64,
    /// Lost deliveries over every step.
    pub lost: u64,
    /// With --find-saturation: the highest achieved deliveries/s of any step.
    pub saturation_deliveries_per_sec: Option<f64>,
    /// With --find-saturation: the highest offered deliveries/s of a step that did not lag.
    pub max_sustained_offered_deliveries_per_sec: Option<f64>,
    /// Every step.
    pub steps: Vec<StepResult>,
    /// Publications subscribers skipped (later seen out of order or lost).
    pub gaps: u64,
    /// Publications that arrived after a later one.
    pub reordered: u64,
    /// Retransmissions received (qos 1).
    pub duplicates: u64,
    /// Frames that were not stamped publications.
    pub unparsed: u64,
    /// Server CPU seconds over the whole run (with --pid).
    pub server_cpu_seconds: Option<f64>,
    /// Server RSS at the end (sum over --pid), KiB.
    pub server_rss_kib: Option<u64>,
    /// The bench's own RSS (all its processes) at the end, KiB.
    pub bench_rss_kib: u64,
    /// The bench's own CPU seconds (all its processes).
    pub bench_cpu_seconds: f64,
    /// Seconds the whole run took.
    pub elapsed: f64,
    /// Open failures by label.
    pub errors: BTreeMap<String, u64>,
    /// Subscriber ends by label.
    pub drops: BTreeMap<String, u64>,
    /// Publish failures by label.
    pub publish_errors: BTreeMap<String, u64>,
}

/// CPU seconds summed over processes (those that cannot be read count 0).
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| procfs::cpu_seconds(Proc::Pid(p)).unwrap_or(0.0)).sum()
}

fn bench_cpu(fleet: &Fleet) -> f64 {
    procfs::cpu_seconds(Proc::Current).unwrap_or(0.0) + cpu_of(&fleet.worker_pids())
}

/// Why a step lagged; empty if it kept up.
pub fn lag_reasons(offered: f64, achieved: f64, expected: u64, received: u64, late: u64, lag_ms: f64) -> Vec<String> {
    let mut why = Vec::new();
    if received < expected {
        why.push(format!("{} of {expected} deliveries missing", expected - received));
    }
    if achieved < KEEP_UP * offered {
        why.push(format!("achieved {achieved:.0} < {:.0} % of offered {offered:.0} deliveries/s", KEEP_UP * 100.0));
    }
    if received > 0 && late as f64 > LATE_FRACTION * received as f64 {
        why.push(format!("{late} of {received} deliveries over {lag_ms} ms (p99 over the threshold)"));
    }
    why
}

/// `rainbow-bench fanout`.
pub async fn fanout(args: &FanoutArgs) -> anyhow::Result<FanoutResult> {
    let started = Instant::now();
    let channel = args.channel.clone().unwrap_or_else(|| format!("bench-{}", std::process::id()));
    if !is_channel_name(&channel) {
        bail!("--channel must be 1-64 letters, digits or -_.: (it goes into URLs and headers)");
    }
    if args.qos > 1 {
        bail!("--qos must be 0 or 1");
    }
    let duration = seconds("duration", args.duration)?;
    let drain = seconds("drain", args.drain)?;
    let pause = seconds("pause", args.pause)?;
    let warmup_timeout = seconds("warmup-timeout", args.warmup_timeout)?;
    let publish_timeout = seconds("publish-timeout", args.publish_timeout)?;
    let late = seconds("lag-ms", args.lag_ms / 1000.0)?;
    if !(args.step_factor.is_finite() && args.step_factor > 1.0) {
        bail!("--step-factor must be above 1");
    }
    let max_steps = args.max_steps.clamp(1, MAX_STEPS - 1);
    let first_rate = match args.deliveries_per_sec {
        Some(d) => d / args.load.connections.max(1) as f64,
        None => args.publish_rate,
    };
    if !(first_rate.is_finite() && first_rate > 0.0 && first_rate <= 100_000.0) {
        bail!("the publish rate must be above 0 and at most 100,000/s (got {first_rate})");
    }
    let sub_urls: Vec<String> = args.load.urls.iter().map(|u| subscribe_url(args.target, u, &channel)).collect();
    let sub_url = sub_urls.join(" ");
    // Publications go through the first node (the others get them over the cluster).
    let first_sub = sub_urls.first().context("give at least one --url")?;
    let pub_url = publish_url(args.target, args.publish_url.as_deref(), first_sub, &channel)?;
    let target_name = format!("{:?}", args.target).to_lowercase();
    let bars = Bars::new(!args.load.no_progress);

    let (spec, per_process) = load_spec_for(&args.load, &sub_urls, Behaviour::Subscribe { late }).await?;
    let publish_http = HttpUrl::resolve(&pub_url).await?;
    if !args.load.allow_remote && !publish_http.addr().ip().is_loopback() {
        bail!("{pub_url} is outside loopback (--allow-remote overrides)");
    }
    let peer = Peer {
        kind: args.target,
        url: publish_http,
        channel: channel.clone(),
        token: args.token.clone(),
        signature: args.signature,
        qos: args.qos,
        message_type: args.message_type,
        nonces: Nonces::new(),
    };
    let publishers = args.publishers.unwrap_or(if args.qos == 0 { 1 } else { 8 });
    let publisher = Arc::new(Publisher::new(peer, publishers, args.payload_size, publish_timeout).await?);
    let server_cpu_start = (!args.pid.is_empty()).then(|| cpu_of(&args.pid));

    let shares = split(args.load.connections, args.load.rate, per_process);
    let mut fleet = start(&spec, &shares)?;
    let opened = open_all(&mut fleet, bars, "subscribing", args.load.connections).await?;
    if opened.ok == 0 {
        bail!("no subscriber could connect to {sub_url}: {:?}", opened.errors);
    }

    // Warm-up: step 0 until every subscriber has had one publication.
    let mut seq = 0u64;
    let warm_start = Instant::now();
    let warm_deadline = tokio::time::Instant::now() + warmup_timeout;
    let ready = loop {
        seq += 1;
        publisher.publish(seq, 0).await?;
        let alive = { fleet.progress().ok.saturating_sub(fleet.progress().dropped) };
        let next = tokio::time::Instant::now() + warmup_interval(alive);
        let all = fleet.wait_until(next.min(warm_deadline), |f| f.stats().ready >= alive, |_| {}).await?;
        if all {
            break true;
        }
        if tokio::time::Instant::now() >= warm_deadline {
            break false;
        }
    };
    publisher.settle().await?;
    if !ready {
        let got = fleet.stats().ready;
        bail!(
            "warm-up: only {got} of {} subscribers received a publication within {:.0} s (publish errors: {:?}); \
             for Rainbow, is the gateway's connect_url pointing at `rainbow-bench backend`?",
            opened.ok,
            warmup_timeout.as_secs_f64(),
            publisher.counts.errors.lock().unwrap_or_else(|p| p.into_inner())
        );
    }
    let warmup_secs = warm_start.elapsed().as_secs_f64();
    tokio::time::sleep(pause).await;

    let mut steps: Vec<StepResult> = Vec::new();
    let mut rate = first_rate;
    for k in 1..=max_steps {
        let p = fleet.progress();
        let subscribers = p.ok.saturating_sub(p.dropped);
        let (accepted0, failed0) = (publisher.accepted(), publisher.failed());
        let (server0, bench0) = (cpu_of(&args.pid), bench_cpu(&fleet));
        let machine0 = procfs::machine_cpu_seconds().unwrap_or(0.0);
        let count = (rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
        let first_us = stamp::now_us();
        let step_start = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let pacer = {
            let (publisher, done) = (publisher.clone(), done.clone());
            let first_seq = seq + 1;
            tokio::spawn(async move {
                let t0 = tokio::time::Instant::now();
                for j in 0..count {
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(j as f64 / rate)).await;
                    publisher.publish(first_seq + j, k as u32).await?;
                }
                publisher.settle().await?;
                done.store(true, Ordering::Release);
                anyhow::Ok(())
            })
        };
        seq += count;
        let bar = bars.seconds(&format!("step {k}"), duration.as_secs());
        let offered = rate * subscribers as f64;
        fleet
            .wait_until(
                tokio::time::Instant::now() + duration + publish_timeout + Duration::from_secs(5),
                |_| done.load(Ordering::Acquire),
                |f| {
                    bar.set_position(step_start.elapsed().as_secs().min(duration.as_secs()));
                    bar.set_message(format!(
                        "{:.0} pub/s, offered {:.0} deliveries/s, received {}",
                        rate,
                        offered,
                        f.stats().step(k).received
                    ));
                },
            )
            .await?;
        pacer.await.context("publisher task")??;
        let publish_secs = step_start.elapsed().as_secs_f64();
        bar.finish();
        let published = publisher.accepted() - accepted0;
        let publish_failed = publisher.failed() - failed0;
        let expected = published * subscribers;
        fleet
            .wait_until(tokio::time::Instant::now() + drain, |f| f.stats().step(k).received >= expected, |_| {})
            .await?;
        let counts = fleet.stats().step(k);
        // From the first publication to the last delivery, but at least the
        // scheduled publishing time (deliveries on time finish within it).
        let span = (counts.last_us.saturating_sub(first_us) as f64 / 1e6).max(count as f64 / rate);
        let achieved = if span > 0.0 { counts.received as f64 / span } else { 0.0 };
        let reasons = lag_reasons(offered, achieved, expected, counts.received, counts.late, args.lag_ms);
        let server_cpu = (!args.pid.is_empty()).then(|| round3(cpu_of(&args.pid) - server0));
        let step = StepResult {
            step: k,
            publish_rate: round3(rate),
            subscribers,
            offered_deliveries_per_sec: round1(offered),
            published,
            publish_failed,
            publish_secs: round3(publish_secs),
            achieved_publish_rate: round3(published as f64 / publish_secs.max(1e-9)),
            expected_deliveries: expected,
            deliveries: counts.received,
            lost: expected.saturating_sub(counts.received),
            late: counts.late,
            achieved_deliveries_per_sec: round1(achieved),
            latency: Latency::default(),
            publish_call_latency: Latency::default(),
            lagging: !reasons.is_empty(),
            lag_reasons: reasons,
            server_cpu_seconds: server_cpu,
            bench_cpu_seconds: round3(bench_cpu(&fleet) - bench0),
            machine_cpu_seconds: round3(procfs::machine_cpu_seconds().unwrap_or(0.0) - machine0),
        };
        bars.note(&format!(
            "step {k}: offered {:.0} deliveries/s, achieved {:.0}, {} of {} delivered{}",
            step.offered_deliveries_per_sec,
            step.achieved_deliveries_per_sec,
            step.deliveries,
            step.expected_deliveries,
            if step.lagging { format!(", LAGGING: {}", step.lag_reasons.join("; ")) } else { String::new() }
        ));
        let lagging = step.lagging;
        steps.push(step);
        if !args.find_saturation || lagging || k == max_steps {
            break;
        }
        rate *= args.step_factor;
        if rate > 100_000.0 {
            break;
        }
        tokio::time::sleep(pause).await;
    }

    let stats = fleet.stats();
    let server_cpu_seconds = server_cpu_start.map(|c0| round3(cpu_of(&args.pid) - c0));
    let server_rss_kib = (!args.pid.is_empty())
        .then(|| args.pid.iter().map(|&p| procfs::memory(Proc::Pid(p)).map(|m| m.rss_kib).unwrap_or(0)).sum());
    let finished = fleet.release().await?;
    let finish = report::merge_finished(&finished);
    let (bench_rss_kib, _, bench_cpu_seconds) = crate::runs::own_figures(&fleet, &finish);
    for step in &mut steps {
        let name = step_histogram(step.step);
        let parts: Vec<&[(u64, u64)]> =
            finished.iter().filter_map(|f| f.histograms.get(&name)).map(Vec::as_slice).collect();
        step.latency = latency::summarise(parts)?.0;
    }
    for step in &mut steps {
        if let Some(r) = publisher.counts.call_latency.get(step.step) {
            step.publish_call_latency = latency::summarise([r.pairs().as_slice()])?.0;
        }
    }
    let headline = if args.find_saturation {
        steps.iter().max_by(|a, b| a.achieved_deliveries_per_sec.total_cmp(&b.achieved_deliveries_per_sec))
    } else {
        steps.first()
    }
    .cloned()
    .context("no step ran")?;
    let saturation =
        args.find_saturation.then(|| steps.iter().map(|s| s.achieved_deliveries_per_sec).fold(0.0, f64::max));
    let sustained = args
        .find_saturation
        .then(|| steps.iter().filter(|s| !s.lagging).map(|s| s.offered_deliveries_per_sec).fold(0.0, f64::max));
    bars.note(&format!(
        "fanout ({target_name}): {} subscribers, headline offered {:.0} achieved {:.0} deliveries/s, p99 {} ms{}",
        opened.ok,
        headline.offered_deliveries_per_sec,
        headline.achieved_deliveries_per_sec,
        headline.latency.p99_ms,
        saturation.map_or(String::new(), |s| format!(", saturation {s:.0} deliveries/s"))
    ));
    let publish_errors = publisher.counts.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(FanoutResult {
        bench: "fanout",
        target: target_name,
        url: sub_url,
        publish_url: pub_url,
        channel,
        qos: args.qos,
        payload_size: args.payload_size,
        publishers,
        connections: args.load.connections as u64,
        connections_ok: opened.ok,
        connections_failed: opened.failed,
        connections_dropped: finish.dropped,
        processes: fleet.processes() + usize::from(!fleet.is_local()),
        handshake_latency: opened.latency,
        warmup_secs: round3(warmup_secs),
        find_saturation: args.find_saturation,
        offered_deliveries_per_sec: headline.offered_deliveries_per_sec,
        achieved_deliveries_per_sec: headline.achieved_deliveries_per_sec,
        latency_p50_ms: headline.latency.p50_ms,
        latency_p99_ms: headline.latency.p99_ms,
        latency_max_ms: headline.latency.max_ms,
        lost: steps.iter().map(|s| s.lost).sum(),
        saturation_deliveries_per_sec: saturation,
        max_sustained_offered_deliveries_per_sec: sustained,
        steps,
        gaps: stats.gaps,
        reordered: stats.reordered,
        duplicates: stats.duplicates,
        unparsed: stats.unparsed,
        server_cpu_seconds,
        server_rss_kib,
        bench_rss_kib,
        bench_cpu_seconds: round3(bench_cpu_seconds),
        elapsed: round3(started.elapsed().as_secs_f64()),
        errors: opened.errors,
        drops: finish.drops,
        publish_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_waits_longer_for_many_subscribers() {
        assert_eq!(warmup_interval(0), WARMUP_EVERY);
        assert_eq!(warmup_interval(10_000), WARMUP_EVERY);
        assert_eq!(warmup_interval(150_000), Duration::from_millis(2250));
        assert_eq!(warmup_interval(u64::MAX), WARMUP_PER_SUBSCRIBER * u32::MAX);
    }

    #[tokio::test]
    async fn urls_per_target() {
        assert_eq!(
            subscribe_url(TargetKind::Rainbow, "ws://127.0.0.1:1984/connect/", "c1"),
            "ws://127.0.0.1:1984/connect/?channel=c1"
        );
        assert_eq!(
            subscribe_url(TargetKind::Rainbow, "ws://h:1/connect/?a=b", "c1"),
            "ws://h:1/connect/?a=b&channel=c1"
        );
        assert_eq!(subscribe_url(TargetKind::Nchan, "ws://h:1/sub/{channel}", "c1"), "ws://h:1/sub/c1");
        let p = |k, given| publish_url(k, given, "ws://127.0.0.1:9/x", "c1").expect("url");
        assert_eq!(p(TargetKind::Rainbow, None), "http://127.0.0.1:9/send/");
        assert_eq!(p(TargetKind::Nchan, None), "http://127.0.0.1:9/pub/c1");
        assert_eq!(p(TargetKind::Pushpin, None), PUSHPIN_PUBLISH);
        assert_eq!(
            p(TargetKind::Pushpin, Some("http://127.0.0.1:6000/publish/{channel}")),
            "http://127.0.0.1:6000/publish/c1"
        );
    }

    async fn peer(kind: TargetKind, url: &str) -> Peer {
        Peer {
            kind,
            url: HttpUrl::resolve(url).await.expect("url"),
            channel: "room".into(),
            token: "bench".into(),
            signature: SignatureVersion::V1,
            qos: 1,
            message_type: 1001,
            nonces: Nonces::starting_at(7),
        }
    }

    #[tokio::test]
    async fn rainbow_calls_are_signed_with_fresh_nonces() {
        let p = peer(TargetKind::Rainbow, "http://127.0.0.1:1984/send/").await;
        let a = p.call("{\"seq\":1}".into());
        let b = p.call("{\"seq\":1}".into());
        assert_ne!(a.path, b.path, "the same payload twice is still two distinct requests");
        assert!(a.path.starts_with("/send/?channel=room&msgtype=1001&qos=1&timestamp="), "{}", a.path);
        let ts = a.path.split("timestamp=").nth(1).and_then(|r| r.split('&').next()).expect("timestamp");
        assert!(a.path.ends_with(&format!("&nonce=7&signature={}", sign::signature("bench", ts, "7"))), "{}", a.path);
        assert_eq!(a.body, Bytes::from_static(b"{\"seq\":1}"));
        let ok = |s: u16, b: &'static str| p.accepted(&Answer { status: s, body: Bytes::from_static(b.as_bytes()) });
        assert!(ok(200, r#"{"status":0}"#));
        assert!(ok(200, r#"{"status": 0, "connections": 3, "data": ""}"#));
        assert!(!ok(200, r#"{"status":1,"msg":"signature error"}"#));
        assert!(!ok(500, r#"{"status":0}"#));
    }

    #[tokio::test]
    async fn rainbow_calls_are_signed_v2_over_the_whole_request() {
        let mut p = peer(TargetKind::Rainbow, "http://127.0.0.1:1984/send/?x=a+b").await;
        p.signature = SignatureVersion::V2;
        let a = p.call("{\"seq\":1}".into());
        assert!(a.path.starts_with("/send/?x=a%20b&channel=room&msgtype=1001&qos=1&timestamp="), "{}", a.path);
        let (path, query) = a.path.split_once('?').expect("a query");
        let get = |name: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('='))).expect(name)
        };
        assert_eq!(get("nonce"), "0000000000000007");
        let canonical = rainbow_protocol::signature::canonical_request(
            "POST",
            path,
            &rainbow_protocol::signature::canonical_query_of(query),
            &rainbow_protocol::signature::body_digest(&a.body),
            get("timestamp"),
            get("nonce"),
        );
        assert_eq!(get("signature"), rainbow_protocol::signature::signature_v2("bench", &canonical));
    }

    #[tokio::test]
    async fn pushpin_and_nchan_calls() {
        let p = peer(TargetKind::Pushpin, PUSHPIN_PUBLISH).await;
        let payload = stamp::encode(Stamp { seq: 3, step: 1, ts_us: 9 }, 0);
        let call = p.call(payload.clone());
        let v: serde_json::Value = serde_json::from_slice(&call.body).expect("JSON");
        assert_eq!(v["items"][0]["channel"], "room");
        assert_eq!(v["items"][0]["formats"]["ws-message"]["content"], payload.as_str());
        assert_eq!(call.path, "/publish/");
        let n = peer(TargetKind::Nchan, "http://127.0.0.1:1/pub/room").await;
        let call = n.call(payload.clone());
        assert_eq!((call.path.as_str(), call.body), ("/pub/room", Bytes::from(payload)));
        assert!(n.accepted(&Answer { status: 202, body: Bytes::new() }));
        assert!(!n.accepted(&Answer { status: 403, body: Bytes::new() }));
    }

    #[test]
    fn lag_rules() {
        assert!(lag_reasons(1000.0, 990.0, 100, 100, 0, 500.0).is_empty());
        assert_eq!(lag_reasons(1000.0, 990.0, 100, 99, 0, 500.0).len(), 1);
        assert!(lag_reasons(1000.0, 900.0, 100, 100, 0, 500.0)[0].contains("achieved"));
        assert!(lag_reasons(1000.0, 1000.0, 1000, 1000, 11, 500.0)[0].contains("p99"));
        assert!(lag_reasons(1000.0, 1000.0, 1000, 1000, 10, 500.0).is_empty());
    }

    #[test]
    fn channel_names() {
        assert!(is_channel_name("bench-12"));
        assert!(!is_channel_name(""));
        assert!(!is_channel_name("a b"));
        assert!(!is_channel_name("a/b"));
    }
}
