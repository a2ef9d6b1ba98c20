//! Workers as real processes (the `echo_worker` example), killed with
//! SIGKILL or restarted with SIGHUP while clients keep sending qos 1 and 2:
//! no client connection drops, every message is answered, and the worker's
//! ledger (its "application state", deduplicated by task key) shows each
//! qos-2 message handled exactly once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rainbow_client::Qos;
use rainbow_worker::FileDedup;

use crate::harness::*;
use crate::worker_harness::*;

const CLIENTS: usize = 4;
const MESSAGES: usize = 40;

/// Times each client payload appears in the ledger.
fn ledger_counts(ledger: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for record in FileDedup::records(ledger).unwrap() {
        let payload = String::from_utf8_lossy(&record.reply.payload).into_owned();
        if payload.starts_with('c') {
            *counts.entry(payload).or_insert(0) += 1;
        }
    }
    counts
}

fn payload(client: usize, i: usize) -> (String, Qos) {
    let qos = if i.is_multiple_of(2) { Qos::AtLeastOnce } else { Qos::ExactlyOnce };
    (format!("c{client}-q{}-{i}", qos.as_u8()), qos)
}

/// Starts `CLIENTS` clients sending `MESSAGES` each, alternating qos 1 and 2,
/// checking every reply; returns them and the count of answered messages.
async fn start_clients(
    gw: &TestGateway,
) -> (Vec<Arc<WatchedClient>>, Arc<AtomicUsize>, Vec<tokio::task::JoinHandle<()>>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = Arc::new(WatchedClient::connect(gw, Duration::from_millis(500)).await);
        clients.push(client.clone());
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                let (p, qos) = payload(c, i);
                let reply = client.client.send(1, p.clone(), qos).await;
                assert_eq!(reply.as_deref().ok(), Some(p.as_bytes()), "{p}: {reply:?}");
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    (clients, answered, tasks)
}

async fn check_nothing_lost(gw: &TestGateway, clients: &[Arc<WatchedClient>], ledger: &Path, qos1_once: bool) {
    assert!(clients.iter().all(|c| !c.closed()), "a client connection dropped");
    assert_eq!(gw.gw.hub.len(), CLIENTS);
    assert_eq!(gw.metric("rainbow_disconnects_total").await, 0.0, "the gateway closed no client");
    let counts = ledger_counts(ledger);
    for c in 0..CLIENTS {
        for i in 0..MESSAGES {
            let (p, qos) = payload(c, i);
            let n = counts.get(&p).copied().unwrap_or(0);
            match qos {
                Qos::ExactlyOnce => assert_eq!(n, 1, "qos-2 message {p} handled {n} times"),
                _ if qos1_once => assert_eq!(n, 1, "qos-1 message {p} handled {n} times"),
                _ => assert!(n >= 1, "qos-1 message {p} never handled"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_and_restarted_loses_nothing() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("worker_route", "workers")]).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let mut worker = EchoProcess::spawn(&gw, &ledger, 4, 20);
    wait_workers(&gw, 1).await;
    let (clients, answered, tasks) = start_clients(&gw).await;

    wait_for("messages flowing", || answered.load(Ordering::SeqCst) >= 20).await;
    worker.kill9();
    wait_workers(&gw, 0).await;
    // Replies already on their way to clients land; then nothing moves.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = answered.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(answered.load(Ordering::SeqCst), during, "nothing is answered while no worker is attached");
    let _restarted = EchoProcess::spawn(&gw, &ledger, 4, 20);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("clients finished").unwrap();
    }
    assert_eq!(answered.load(Ordering::SeqCst), CLIENTS * MESSAGES);
    assert!(gw.metric("rainbow_worker_tasks_requeued_total").await >= 1.0, "the kill hit tasks in flight");
    assert_eq!(gw.metric("rainbow_worker_disconnects_total{reason=\"lost\"}").await, 1.0);
    check_nothing_lost(&gw, &clients, &ledger, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_restarts_and_loses_nothing() {
    let backend = Backend::start().await;
    let gw = TestGateway::start(&backend, &[("worker_route", "workers")]).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let worker = EchoProcess::spawn(&gw, &ledger, 4, 20);
    wait_workers(&gw, 1).await;
    let (clients, answered, tasks) = start_clients(&gw).await;

    wait_for("messages flowing", || answered.load(Ordering::SeqCst) >= 20).await;
    worker.signal("-HUP");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("clients finished").unwrap();
    }
    assert_eq!(answered.load(Ordering::SeqCst), CLIENTS * MESSAGES);
    assert_eq!(gw.metric("rainbow_worker_disconnects_total{reason=\"drained\"}").await, 1.0, "one clean drain");
    assert_eq!(gw.metric("rainbow_worker_tasks_requeued_total").await, 0.0, "a drain hands nothing back");
    wait_workers(&gw, 1).await;
    let info = gw.gw.backend.workers().snapshot(std::time::Instant::now());
    assert_eq!(info[0].name.as_ref(), "echo", "the same process re-attached after its restart");
    assert!(worker_alive(&worker), "SIGHUP restarts in place");
    check_nothing_lost(&gw, &clients, &ledger, false).await;
}

fn worker_alive(worker: &EchoProcess) -> bool {
    Path::new(&format!("/proc/{}", worker.child.id())).exists()
}
