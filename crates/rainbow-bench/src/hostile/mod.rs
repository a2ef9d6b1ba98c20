//! `rainbow-bench hostile`: N hostile connections, each cycling through
//! attacks on the gateway, and how the gateway ended each attempt.
//!
//! Every connection (the [`Behaviour::Hostile`] behaviour, split over worker
//! processes like the other runs) runs one attack at a time
//! ([`attack::cycle`]): connection i starts with the i-th attack of the list
//! and moves to the next one after each attempt, so at any moment about
//! N / attacks connections run each attack. The starts are spread over the
//! first attack time, so the reconnections are spread too. An attempt lasts
//! until the gateway ends it or for `--attack-secs`, whichever comes first;
//! the bench then closes it, waits `--pause` seconds and starts the next.
//!
//! The result counts, per attack, the attempts and their outcomes
//! ([`wire::Outcome::label`]: `closed CODE`, `http STATUS`, `eof`, `reset`,
//! `open`, `open, writes blocked`, ...) with the time the gateway took to end
//! them, and with `--pid` the gateway's RSS over the run.

pub mod attack;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::cli::{HostileArgs, seconds};
use crate::engine::Behaviour;
use crate::fleet::split;
use crate::latency;
use crate::procfs::{self, Proc};
use crate::progress::Bars;
use crate::report::{self, Latency, round1, round3};
use crate::runs::{gateway_cpu, gateway_memory, load_spec_for, open_all, own_figures, start};
use crate::stats::hostile_histogram;
use wire::Attack;

/// What each hostile connection does (shipped to worker processes as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostilePlan {
    /// The attacks to cycle through.
    pub attacks: Vec<Attack>,
    /// Seconds one attempt lasts at most.
    pub attack_secs: f64,
    /// Seconds between an attempt's end and the next one's start.
    pub pause_secs: f64,
    /// Slowloris: seconds between the head's bytes.
    pub slowloris_every_secs: f64,
    /// Stalled body: body bytes per second.
    pub body_rate: f64,
    /// Stalled body: the announced `Content-Length`.
    pub content_length: u64,
    /// Dup-flood: payload bytes of the qos-2 SEND.
    pub dup_payload: usize,
    /// Dup-flood: duplicates per second.
    pub dup_rate: f64,
    /// Dup-flood: message type of the SEND.
    pub message_type: u16,
    /// Rel-flood: REL packets per second.
    pub rel_rate: f64,
    /// Ping-flood: pings per second.
    pub ping_rate: f64,
    /// Big-header: the payload length the frame header announces.
    pub big_header_len: u64,
    /// The gateway's `security_token` (stalled-body-signed).
    pub token: String,
    /// The channel of the stalled `/send/` calls.
    pub channel: String,
}

impl Default for HostilePlan {
    fn default() -> HostilePlan {
        HostilePlan {
            attacks: Attack::ALL.to_vec(),
            attack_secs: 30.0,
            pause_secs: 1.0,
            slowloris_every_secs: 1.0,
            body_rate: 10.0,
            content_length: 1_000_000,
            dup_payload: 128 * 1024,
            dup_rate: 500.0,
            message_type: 1,
            rel_rate: 5000.0,
            ping_rate: 1000.0,
            big_header_len: 1 << 20,
            token: "bench".to_string(),
            channel: "hostile".to_string(),
        }
    }
}

/// One outcome of one attack.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutcomeResult {
    /// Attempts that ended this way.
    pub count: u64,
    /// When the gateway ended them: time from the attempt's start (TCP
    /// connect) to the end seen by the bench. Absent for `open` outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Latency>,
}

/// One attack's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttackResult {
    /// Attempts started.
    pub attempts: u64,
    /// Attempts finished (the others were cut short by the run's end).
    pub finished: u64,
    /// Attempts still running at the run's end, not counted in `outcomes`.
    pub in_progress: u64,
    /// Finished attempts the gateway ended (close frame, HTTP status, end of file, reset).
    pub ended_by_gateway: u64,
    /// Finished attempts still open when their attack time ran out.
    pub open_at_end: u64,
    /// Attempts that could not connect or complete their WebSocket handshake
    /// for another reason than an HTTP status.
    pub not_started: u64,
    /// Finished attempts by outcome.
    pub outcomes: BTreeMap<String, OutcomeResult>,
    /// Frames (WebSocket attacks) or writes (HTTP attacks) sent.
    pub frames_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
}

/// The result of `rainbow-bench hostile`.
#[derive(Debug, Clone, Serialize)]
pub struct HostileResult {
    /// Always `"hostile"`.
    pub bench: &'static str,
    /// The gateway URL.
    pub url: String,
    /// Hostile connections asked for.
    pub connections: u64,
    /// Hostile connections whose cycle started.
    pub connections_started: u64,
    /// Bench processes (1, or the parent plus its workers).
    pub processes: usize,
    /// What each connection did.
    pub plan: HostilePlan,
    /// Seconds the run lasted (from the first start to the end).
    pub duration_secs: f64,
    /// Whether SIGTERM or SIGINT ended the run before `--duration`.
    pub stopped_early: bool,
    /// Attempts started, all attacks.
    pub attempts: u64,
    /// Finished attempts the gateway ended, all attacks.
    pub ended_by_gateway: u64,
    /// Finished attempts still open at their attack time's end, all attacks.
    pub open_at_end: u64,
    /// Attempts cut short by the run's end, all attacks.
    pub in_progress: u64,
    /// Per attack, by name.
    pub per_attack: BTreeMap<String, AttackResult>,
    /// Gateway RSS when the run started, KiB (with --pid).
    pub gateway_rss_start_kib: Option<u64>,
    /// Highest gateway RSS sampled (every second), KiB (with --pid).
    pub gateway_rss_max_kib: Option<u64>,
    /// Gateway RSS at the end, KiB (with --pid).
    pub gateway_rss_end_kib: Option<u64>,
    /// Gateway CPU seconds during the run (with --pid).
    pub gateway_cpu_seconds: Option<f64>,
    /// The bench's own RSS (all its processes) at the end, KiB.
    pub bench_rss_kib: u64,
    /// The bench's own CPU seconds (all its processes).
    pub bench_cpu_seconds: f64,
    /// Seconds the whole run took.
    pub elapsed: f64,
}

impl HostileArgs {
    /// The plan these arguments describe, checked.
    pub fn plan(&self) -> anyhow::Result<HostilePlan> {
        let attacks = wire::parse_attacks(&self.attacks).map_err(anyhow::Error::msg)?;
        for (name, value) in [
            ("attack-secs", self.attack_secs),
            ("pause", self.pause),
            ("slowloris-every", self.slowloris_every),
            ("body-rate", self.body_rate),
            ("dup-rate", self.dup_rate),
            ("rel-rate", self.rel_rate),
            ("ping-rate", self.ping_rate),
        ] {
            if !(value.is_finite() && (0.0..=1e7).contains(&value)) {
                bail!("--{name} must be a number between 0 and 10^7, not {value}");
            }
        }
        if self.attack_secs <= 0.0 {
            bail!("--attack-secs must be above 0");
        }
        if self.slowloris_every <= 0.0 {
            bail!("--slowloris-every must be above 0");
        }
        if self.dup_payload > 16 << 20 {
            bail!("--dup-payload is at most 16 MiB");
        }
        if self.big_header_len >> 63 != 0 {
            bail!("--big-header-len must fit in 63 bits");
        }
        if self.channel.is_empty()
            || !self.channel.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            bail!("--channel must be letters, digits or -_.:");
        }
        Ok(HostilePlan {
            attacks,
            attack_secs: self.attack_secs,
            pause_secs: self.pause,
            slowloris_every_secs: self.slowloris_every,
            body_rate: self.body_rate,
            content_length: self.content_length,
            dup_payload: self.dup_payload,
            dup_rate: self.dup_rate,
            message_type: self.message_type,
            rel_rate: self.rel_rate,
            ping_rate: self.ping_rate,
            big_header_len: self.big_header_len,
            token: self.token.clone(),
            channel: self.channel.clone(),
        })
    }
}

/// Sets `flag` on SIGTERM or SIGINT.
fn on_signal(flag: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            flag.store(true, Ordering::Relaxed);
        }
    })
}

/// Builds one attack's result from its counts and the merged histograms.
pub fn attack_result(
    attack: Attack,
    counts: &crate::stats::AttackCounts,
    histograms: &BTreeMap<String, Vec<Vec<(u64, u64)>>>,
) -> anyhow::Result<AttackResult> {
    let mut outcomes = BTreeMap::new();
    let (mut by_gateway, mut open, mut not_started) = (0, 0, 0);
    for (label, &count) in &counts.outcomes {
        let after = match histograms.get(&hostile_histogram(attack, label)) {
            Some(parts) => Some(latency::summarise(parts.iter().map(Vec::as_slice))?.0),
            None => None,
        };
        if label.starts_with("open") {
            open += count;
        } else if label.starts_with("connect:") || label.starts_with("handshake:") {
            not_started += count;
        } else {
            by_gateway += count;
        }
        outcomes.insert(label.clone(), OutcomeResult { count, after });
    }
    let finished = counts.finished();
    Ok(AttackResult {
        attempts: counts.started,
        finished,
        in_progress: counts.started.saturating_sub(finished),
        ended_by_gateway: by_gateway,
        open_at_end: open,
        not_started,
        outcomes,
        frames_sent: counts.frames,
        bytes_sent: counts.bytes,
    })
}

/// `rainbow-bench hostile`.
pub async fn hostile(args: &HostileArgs) -> anyhow::Result<HostileResult> {
    let started = Instant::now();
    let plan = args.plan()?;
    let duration = seconds("duration", args.duration)?;
    let bars = Bars::new(!args.load.no_progress);
    if let Some(pid) = args.pid {
        gateway_memory(pid)?;
    }
    let behaviour = Behaviour::Hostile(Box::new(plan.clone()));
    let (spec, per_process) = load_spec_for(&args.load, &args.load.urls, behaviour).await?;
    let rss_of = |pid: Option<u32>| pid.and_then(|p| procfs::memory(Proc::Pid(p)).ok()).map(|m| m.rss_kib);
    let rss_start = rss_of(args.pid);
    let cpu_start = match args.pid {
        Some(pid) => Some(gateway_cpu(pid)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = on_signal(stop.clone());

    let shares = split(args.load.connections, args.load.rate, per_process);
    let mut fleet = start(&spec, &shares)?;
    let opened = open_all(&mut fleet, bars, "starting", args.load.connections).await?;
    let bar = bars.seconds("attacking", duration.as_secs());
    let end = tokio::time::Instant::from_std(started + duration);
    let mut rss_max = rss_start;
    let mut sampled = Instant::now();
    fleet
        .wait_until(
            end,
            |_| stop.load(Ordering::Relaxed),
            |f| {
                if sampled.elapsed() >= Duration::from_secs(1) {
                    sampled = Instant::now();
                    rss_max = rss_max.max(rss_of(args.pid));
                }
                bar.set_position(started.elapsed().as_secs().min(duration.as_secs()));
                let s = f.stats();
                let (attempts, finished) =
                    s.hostile.values().fold((0, 0), |(a, b), c| (a + c.started, b + c.finished()));
                bar.set_message(format!("{attempts} attempts, {finished} finished"));
            },
        )
        .await?;
    bar.finish();
    signals.abort();
    let stopped_early = stop.load(Ordering::Relaxed);
    let duration_secs = started.elapsed().as_secs_f64();
    let rss_end = rss_of(args.pid);
    rss_max = rss_max.max(rss_end);
    let cpu_end = args.pid.and_then(|p| procfs::cpu_seconds(Proc::Pid(p)).ok());
    let stats = fleet.stats();
    let finished = fleet.release().await?;
    let finish = report::merge_finished(&finished);
    let (bench_rss_kib, _, bench_cpu_seconds) = own_figures(&fleet, &finish);

    let mut histograms: BTreeMap<String, Vec<Vec<(u64, u64)>>> = BTreeMap::new();
    for f in &finished {
        for (name, pairs) in &f.histograms {
            histograms.entry(name.clone()).or_default().push(pairs.clone());
        }
    }
    let mut per_attack = BTreeMap::new();
    for attack in Attack::ALL {
        if let Some(counts) = stats.hostile.get(attack.name()) {
            per_attack.insert(attack.name().to_string(), attack_result(attack, counts, &histograms)?);
        }
    }
    let sum = |f: fn(&AttackResult) -> u64| per_attack.values().map(f).sum::<u64>();
    let result = HostileResult {
        bench: "hostile",
        url: args.load.url_label(),
        connections: args.load.connections as u64,
        connections_started: opened.ok,
        processes: fleet.processes() + usize::from(!fleet.is_local()),
        plan,
        duration_secs: round3(duration_secs),
        stopped_early,
        attempts: sum(|a| a.attempts),
        ended_by_gateway: sum(|a| a.ended_by_gateway),
        open_at_end: sum(|a| a.open_at_end),
        in_progress: sum(|a| a.in_progress),
        per_attack,
        gateway_rss_start_kib: rss_start,
        gateway_rss_max_kib: rss_max,
        gateway_rss_end_kib: rss_end,
        gateway_cpu_seconds: cpu_start.zip(cpu_end).map(|(a, b)| round3(b - a)),
        bench_rss_kib,
        bench_cpu_seconds: round3(bench_cpu_seconds),
        elapsed: round3(started.elapsed().as_secs_f64()),
    };
    bars.note(&format!(
        "hostile: {} connections, {} attempts in {:.0} s: {} ended by the gateway, {} still open at their end{}",
        result.connections_started,
        result.attempts,
        duration_secs,
        result.ended_by_gateway,
        result.open_at_end,
        match (rss_start, rss_max) {
            (Some(a), Some(b)) => format!(
                "; gateway RSS {a} KiB at the start, {b} KiB at most ({:+.1} %)",
                round1((b as f64 / a.max(1) as f64 - 1.0) * 100.0)
            ),
            _ => String::new(),
        }
    ));
    for (name, a) in &result.per_attack {
        let outcomes: Vec<String> = a.outcomes.iter().map(|(l, o)| format!("{l}: {}", o.count)).collect();
        bars.note(&format!("  {name:<20} {:>6} attempts  {}", a.attempts, outcomes.join(", ")));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> HostileArgs {
        let mut argv = vec!["rainbow-bench", "hostile"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Hostile(a) => a,
            other => panic!("not hostile: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = args(&[]);
        assert_eq!(a.load.connections, 1000);
        assert_eq!(a.plan().expect("valid"), HostilePlan::default());
        let p = args(&["--attacks", "rel-flood,ping-flood", "--rel-rate", "20", "--attack-secs", "2"]).plan();
        let p = p.expect("valid");
        assert_eq!((p.attacks.len(), p.rel_rate, p.attack_secs), (2, 20.0, 2.0));
        assert!(args(&["--attacks", "nope"]).plan().is_err());
        assert!(args(&["--attack-secs", "0"]).plan().is_err());
        assert!(args(&["--channel", "a b"]).plan().is_err());
    }

    #[test]
    fn plans_travel_as_json() {
        let plan = HostilePlan { attacks: vec![Attack::DupFlood], dup_rate: 7.5, ..HostilePlan::default() };
        let line = serde_json::to_string(&plan).expect("serializes");
        assert!(line.contains("\"dup-flood\""), "{line}");
        assert_eq!(serde_json::from_str::<HostilePlan>(&line).expect("parses"), plan);
        // Missing fields take their defaults.
        assert_eq!(serde_json::from_str::<HostilePlan>("{}").expect("parses"), HostilePlan::default());
    }

    #[test]
    fn attack_results_sort_outcomes() {
        let counts = crate::stats::AttackCounts {
            started: 10,
            outcomes: [
                ("closed 1008".to_string(), 3),
                ("open, writes blocked".to_string(), 4),
                ("connect: connection refused".to_string(), 1),
            ]
            .into(),
            frames: 100,
            bytes: 900,
        };
        let histograms: BTreeMap<String, Vec<Vec<(u64, u64)>>> =
            [(hostile_histogram(Attack::RelFlood, "closed 1008"), vec![vec![(2_000, 2)], vec![(4_000, 1)]])].into();
        let r = attack_result(Attack::RelFlood, &counts, &histograms).expect("result");
        assert_eq!((r.attempts, r.finished, r.in_progress), (10, 8, 2));
        assert_eq!((r.ended_by_gateway, r.open_at_end, r.not_started), (3, 4, 1));
        let closed = &r.outcomes["closed 1008"];
        assert_eq!(closed.count, 3);
        assert!((closed.after.expect("timed").max_ms - 4.0).abs() < 0.01);
        assert_eq!(r.outcomes["open, writes blocked"].after, None);
    }
}
