//! Where the load runs: in this process, or split over worker processes.
//!
//! A process here may hold at most 20,000 open files, so one process stays
//! under about 19,000 sockets. [`split`] cuts a load into shares of at most
//! `per_process` connections; one share runs in this process
//! ([`Fleet::local`]), several run in workers ([`Fleet::spawn`]): this same
//! binary started with the hidden `worker` subcommand. A worker prints its
//! [`Event`]s as JSON lines on stdout and lets its connections go when a line
//! (or end of file) arrives on stdin, so a parent that dies takes its workers
//! down with it.
//!
//! Reports reach the caller through one bounded queue; when it is nearly
//! full, progress and stats snapshots are dropped (the next one supersedes
//! them), never the opening and final reports.
//!
//! Either way the caller sees one merged stream and three phases:
//! [`Fleet::opened`], [`Fleet::hold`] (or [`Fleet::wait_until`] a condition
//! on the merged [`Fleet::stats`]), [`Fleet::release`].

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use crate::conn::Target;
use crate::engine::{self, Behaviour, Event, Finished, Opened, Plan, Progress, Sink};
use crate::sources::Sources;
use crate::stats::Stats;

/// How long workers get to exit after their final report.
const WORKER_EXIT_GRACE: Duration = Duration::from_secs(10);

/// Reports queued for the caller at most.
const REPORTS: usize = 1024;

/// Room kept in the report queue for the reports that must not be lost:
/// progress and stats snapshots (cumulative, so the next one replaces a
/// dropped one) are dropped when less than this is left.
const RESERVE: usize = 64;

/// Whether a report may be dropped when the queue is nearly full.
fn droppable(event: &Event) -> bool {
    matches!(event, Event::Progress(_) | Event::Stats(_))
}

/// One process's part of a load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share {
    /// Global number of the first connection.
    pub first_index: usize,
    /// Connections.
    pub count: usize,
    /// Connections per second (0 = unpaced).
    pub rate: f64,
}

/// Cuts `count` connections at `rate` into as few shares of at most
/// `per_process` as possible, as even as possible; the rate is divided in
/// proportion so the total stays `rate`.
pub fn split(count: usize, rate: f64, per_process: usize) -> Vec<Share> {
    let per_process = per_process.max(1);
    let parts = count.div_ceil(per_process).max(1);
    let (base, extra) = (count / parts, count % parts);
    let mut first_index = 0;
    (0..parts)
        .map(|i| {
            let n = base + usize::from(i < extra);
            let share =
                Share { first_index, count: n, rate: if count == 0 { rate } else { rate * n as f64 / count as f64 } };
            first_index += n;
            share
        })
        .collect()
}

/// Settings common to every share of a load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where to connect: connection i goes to `targets[i % len]`.
    pub targets: Vec<Arc<Target>>,
    /// Handshakes in flight at most, per process.
    pub concurrency: usize,
    /// Source addresses.
    pub sources: Sources,
    /// Longest one open may take.
    pub handshake_timeout: Duration,
    /// Device id prefix.
    pub device_prefix: String,
    /// What each connection does once open.
    pub behaviour: Behaviour,
    /// Runtime threads of each worker process (0 = one per core).
    pub worker_threads: usize,
}

impl LoadSpec {
    /// The engine plan of one share.
    pub fn plan(&self, share: Share) -> Plan {
        Plan {
            targets: self.targets.clone(),
            count: share.count,
            first_index: share.first_index,
            rate: share.rate,
            concurrency: self.concurrency,
            sources: self.sources.clone(),
            handshake_timeout: self.handshake_timeout,
            device_prefix: self.device_prefix.clone(),
            behaviour: self.behaviour.clone(),
        }
    }

    /// The command-line arguments of a worker running `share`.
    pub fn worker_args(&self, share: Share) -> Vec<String> {
        let mut args = vec!["worker".to_string()];
        for target in &self.targets {
            args.extend(["--url".to_string(), target.url().to_string()]);
        }
        args.extend([
            "--connections".to_string(),
            share.count.to_string(),
            "--first-index".to_string(),
            share.first_index.to_string(),
            "--rate".to_string(),
            share.rate.to_string(),
            "--concurrency".to_string(),
            self.concurrency.to_string(),
            "--sources".to_string(),
            self.sources.to_string(),
            "--handshake-timeout".to_string(),
            self.handshake_timeout.as_secs_f64().to_string(),
            "--device-prefix".to_string(),
            self.device_prefix.clone(),
        ]);
        args.extend(behaviour_args(&self.behaviour));
        args.extend(["--threads".to_string(), self.worker_threads.to_string()]);
        args
    }
}

/// The worker arguments that give it `behaviour` (see [`crate::cli::WorkerArgs`]).
pub fn behaviour_args(behaviour: &Behaviour) -> Vec<String> {
    let secs = |d: std::time::Duration| d.as_secs_f64().to_string();
    match behaviour {
        Behaviour::Idle => vec![],
        Behaviour::Subscribe { late } => vec!["--behaviour".into(), "subscribe".into(), "--late".into(), secs(*late)],
        Behaviour::Rpc(rpc) => vec![
            "--behaviour".into(),
            "rpc".into(),
            "--window".into(),
            rpc.window.to_string(),
            "--message-type".into(),
            rpc.message_type.to_string(),
            "--payload-size".into(),
            rpc.payload_size.to_string(),
            "--rpc-timeout".into(),
            secs(rpc.timeout),
            "--warmup".into(),
            secs(rpc.warmup),
            "--measure".into(),
            secs(rpc.measure),
            "--interval".into(),
            secs(rpc.interval.unwrap_or_default()),
        ],
        Behaviour::Churn { period } => vec!["--behaviour".into(), "churn".into(), "--period".into(), secs(*period)],
        // A plain struct of numbers and strings always serializes.
        Behaviour::Hostile(plan) => vec![
            "--behaviour".into(),
            "hostile".into(),
            "--hostile".into(),
            serde_json::to_string(plan).unwrap_or_default(),
        ],
    }
}

/// Something a member of the fleet reported.
#[derive(Debug)]
enum Report {
    /// An engine event.
    Event(usize, Event),
    /// The member stopped reporting: normally after `Finished`, or with why not.
    Exited(usize, Result<(), String>),
}

enum Member {
    Local { release: Option<oneshot::Sender<()>> },
    Child { child: Box<Child>, stdin: Option<ChildStdin> },
}

/// A running load: one share here, or one per worker process.
pub struct Fleet {
    members: Vec<Member>,
    reports: mpsc::Receiver<Report>,
    progress: Vec<Progress>,
    stats: Vec<Stats>,
    opened: Vec<Option<Opened>>,
    finished: Vec<Option<Finished>>,
    exited: Vec<bool>,
}

impl Fleet {
    fn new(members: Vec<Member>, reports: mpsc::Receiver<Report>) -> Fleet {
        let n = members.len();
        Fleet {
            members,
            reports,
            progress: vec![Progress::default(); n],
            stats: vec![Stats::default(); n],
            opened: vec![None; n],
            finished: vec![None; n],
            exited: vec![false; n],
        }
    }

    /// Runs one plan in this process.
    pub fn local(plan: Plan) -> Fleet {
        let (tx, rx) = mpsc::channel(REPORTS);
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let sink: Sink = {
            let tx = tx.clone();
            Arc::new(move |event| {
                if droppable(&event) && tx.capacity() < RESERVE {
                    return;
                }
                // Full only if the caller stopped reading for minutes; then it
                // is not waiting for this report either.
                let _ = tx.try_send(Report::Event(0, event));
            })
        };
        tokio::spawn(async move {
            let outcome = engine::run(plan, sink, async {
                let _ = release_rx.await;
            })
            .await;
            let _ = tx.send(Report::Exited(0, outcome.map_err(|e| format!("{e:#}")))).await;
        });
        Fleet::new(vec![Member::Local { release: Some(release_tx) }], rx)
    }

    /// Starts one worker process per share.
    pub fn spawn(spec: &LoadSpec, shares: &[Share]) -> anyhow::Result<Fleet> {
        let exe: PathBuf = std::env::current_exe().context("cannot find this program to start workers")?;
        let (tx, rx) = mpsc::channel(REPORTS);
        let mut members = Vec::with_capacity(shares.len());
        for (index, share) in shares.iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .args(spec.worker_args(*share))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start worker {index} ({})", exe.display()))?;
            let stdout = child.stdout.take().context("worker stdout not captured")?;
            let stdin = child.stdin.take();
            tokio::spawn(read_worker(index, stdout, tx.clone()));
            members.push(Member::Child { child: Box::new(child), stdin });
        }
        Ok(Fleet::new(members, rx))
    }

    /// Process ids of the worker processes (none for a local fleet).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| match m {
                Member::Child { child, .. } => child.id(),
                Member::Local { .. } => None,
            })
            .collect()
    }

    /// How many processes run the load (1 for a local fleet).
    pub fn processes(&self) -> usize {
        self.members.len()
    }

    /// Whether the load runs in this process.
    pub fn is_local(&self) -> bool {
        matches!(self.members.as_slice(), [Member::Local { .. }])
    }

    /// Counts so far, summed over members.
    pub fn progress(&self) -> Progress {
        self.progress.iter().fold(Progress::default(), |a, b| a + *b)
    }

    /// The behaviour's counts so far, merged over members.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for s in &self.stats {
            total.merge(s);
        }
        total
    }

    /// Takes reports until `done` holds for the fleet or `deadline` passes;
    /// returns whether `done` held. `every_tick` sees the fleet at least
    /// every 200 ms.
    pub async fn wait_until(
        &mut self,
        deadline: tokio::time::Instant,
        mut done: impl FnMut(&Fleet) -> bool,
        mut every_tick: impl FnMut(&Fleet),
    ) -> anyhow::Result<bool> {
        let mut tick = tokio::time::interval(engine::PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if done(self) {
                return Ok(true);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(done(self)),
                _ = tick.tick() => every_tick(self),
                step = self.next() => step?,
            }
        }
    }

    /// Takes the next report into the fleet's state.
    async fn next(&mut self) -> anyhow::Result<()> {
        let report = self.reports.recv().await.context("every member of the fleet is gone")?;
        match report {
            Report::Event(i, Event::Progress(p)) => self.progress[i] = p,
            Report::Event(i, Event::Opened(o)) => {
                // The last progress tick may predate the last opens.
                let p = &mut self.progress[i];
                (p.ok, p.failed) = (p.ok.max(o.ok), p.failed.max(o.failed));
                self.opened[i] = Some(o);
            }
            Report::Event(i, Event::Stats(s)) => self.stats[i] = s,
            Report::Event(i, Event::Finished(f)) => self.finished[i] = Some(f),
            Report::Exited(i, outcome) => {
                self.exited[i] = true;
                if let Err(why) = outcome {
                    bail!("worker {i} failed: {why}");
                }
                if self.finished[i].is_none() {
                    bail!("worker {i} stopped before reporting its results (see its messages above)");
                }
            }
        }
        Ok(())
    }

    /// Waits until every member has finished opening; `on_progress` sees the
    /// summed counts as they come.
    pub async fn opened(&mut self, mut on_progress: impl FnMut(Progress)) -> anyhow::Result<Vec<Opened>> {
        while self.opened.iter().any(Option::is_none) {
            self.next().await?;
            on_progress(self.progress());
        }
        Ok(self.opened.iter().flatten().cloned().collect())
    }

    /// Keeps the connections for `duration`, calling `every_second` with the
    /// summed counts once a second.
    pub async fn hold(&mut self, duration: Duration, mut every_second: impl FnMut(Progress)) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + duration;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return Ok(()),
                _ = tick.tick() => every_second(self.progress()),
                step = self.next() => step?,
            }
        }
    }

    /// Lets every member's connections go and collects the final reports.
    pub async fn release(&mut self) -> anyhow::Result<Vec<Finished>> {
        for member in &mut self.members {
            match member {
                Member::Local { release } => {
                    if let Some(release) = release.take() {
                        let _ = release.send(());
                    }
                }
                Member::Child { stdin, .. } => {
                    if let Some(mut stdin) = stdin.take() {
                        // A worker that already died shows up as an early exit below.
                        let _ = stdin.write_all(b"release\n").await;
                        let _ = stdin.flush().await;
                    }
                }
            }
        }
        while self.finished.iter().any(Option::is_none) || self.exited.iter().any(|e| !e) {
            self.next().await?;
        }
        for (i, member) in self.members.iter_mut().enumerate() {
            if let Member::Child { child, .. } = member {
                match tokio::time::timeout(WORKER_EXIT_GRACE, child.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => bail!("worker {i} exited with {status}"),
                    Ok(Err(e)) => bail!("cannot wait for worker {i}: {e}"),
                    Err(_) => {
                        let _ = child.kill().await;
                        bail!("worker {i} did not exit after reporting");
                    }
                }
            }
        }
        Ok(self.finished.iter().flatten().cloned().collect())
    }
}

/// Reads a worker's JSON lines into the fleet's report channel.
async fn read_worker(index: usize, stdout: ChildStdout, tx: mpsc::Sender<Report>) {
    let mut lines = BufReader::new(stdout).lines();
    let outcome = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    if droppable(&event) && tx.capacity() < RESERVE {
                        continue;
                    }
                    let _ = tx.send(Report::Event(index, event)).await;
                }
                Err(e) => {
                    let start: String = line.chars().take(80).collect();
                    break Err(format!("printed a line that is not an event ({e}): {start}"));
                }
            },
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("cannot read its output: {e}")),
        }
    };
    let _ = tx.send(Report::Exited(index, outcome)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_counts_rates_and_indices() {
        assert_eq!(split(100, 50.0, 18_000), vec![Share { first_index: 0, count: 100, rate: 50.0 }]);
        let shares = split(40_001, 4000.0, 18_000);
        assert_eq!(shares.len(), 3);
        assert_eq!(shares.iter().map(|s| s.count).sum::<usize>(), 40_001);
        assert!(shares.iter().all(|s| s.count <= 18_000));
        assert_eq!(shares[1].first_index, shares[0].count);
        assert_eq!(shares[2].first_index, shares[0].count + shares[1].count);
        let total: f64 = shares.iter().map(|s| s.rate).sum();
        assert!((total - 4000.0).abs() < 1e-6);
        assert_eq!(split(0, 10.0, 5).len(), 1);
    }

    #[tokio::test]
    async fn every_url_reaches_the_workers_in_order() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let urls = ["ws://127.0.0.1:1/connect/", "ws://127.0.0.2:2/connect/", "ws://127.0.0.3:3/connect/"];
        let mut targets = Vec::new();
        for url in urls {
            targets.push(Arc::new(Target::resolve(url).await.expect("resolves")));
        }
        let spec = LoadSpec {
            targets,
            concurrency: 4,
            sources: "none".parse().expect("sources"),
            handshake_timeout: Duration::from_secs(1),
            device_prefix: "d".into(),
            behaviour: Behaviour::Idle,
            worker_threads: 1,
        };
        let mut argv = vec!["rainbow-bench".to_string()];
        argv.extend(spec.worker_args(Share { first_index: 7, count: 5, rate: 0.0 }));
        let Command::Worker(args) = Cli::try_parse_from(argv).expect("parses").command else { panic!("not a worker") };
        assert_eq!(args.urls, urls);
        assert_eq!((args.first_index, args.connections), (7, 5));
    }

    #[test]
    fn behaviours_become_worker_arguments() {
        use crate::cli::{Cli, Command};
        use crate::clients::RpcPlan;
        use clap::Parser;
        let rpc = Behaviour::Rpc(RpcPlan {
            window: 2,
            message_type: 7,
            payload_size: 40,
            timeout: std::time::Duration::from_secs(5),
            warmup: std::time::Duration::from_millis(1500),
            measure: std::time::Duration::from_secs(10),
            interval: None,
        });
        let paced = match &rpc {
            Behaviour::Rpc(plan) => {
                Behaviour::Rpc(RpcPlan { interval: Some(std::time::Duration::from_millis(250)), ..plan.clone() })
            }
            _ => unreachable!(),
        };
        let hostile = Behaviour::Hostile(Box::new(crate::hostile::HostilePlan {
            attacks: vec![crate::hostile::wire::Attack::PingFlood, crate::hostile::wire::Attack::Silent],
            ping_rate: 12.5,
            token: "t \"quoted\"".into(),
            ..Default::default()
        }));
        for behaviour in [
            Behaviour::Idle,
            Behaviour::Subscribe { late: std::time::Duration::from_millis(250) },
            rpc,
            paced,
            Behaviour::Churn { period: std::time::Duration::from_secs(20) },
            hostile,
        ] {
            let mut argv =
                vec!["rainbow-bench".to_string(), "worker".into(), "--url".into(), "ws://127.0.0.1:1/".into()];
            argv.extend(["--connections".into(), "3".into()]);
            argv.extend(behaviour_args(&behaviour));
            let Command::Worker(args) = Cli::try_parse_from(argv).expect("parses").command else {
                panic!("not a worker")
            };
            assert_eq!(args.behaviour().expect("valid"), behaviour);
        }
    }
}
