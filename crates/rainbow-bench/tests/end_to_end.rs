//! End to end: a real gateway (in-process, no backend, free loopback port)
//! measured by the bench's runs, and by the binary splitting itself over
//! worker processes.

use std::net::SocketAddr;

use clap::Parser;
use rainbow_bench::cli::{Cli, Command};
use rainbow_bench::runs;
use rainbow_gateway::config::Config;
use rainbow_gateway::{Server, Settings};
use tokio::sync::oneshot;

struct Gateway {
    addr: SocketAddr,
    gateway: std::sync::Arc<rainbow_gateway::Gateway>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), rainbow_gateway::ServerError>>,
}

impl Gateway {
    async fn start() -> Gateway {
        Gateway::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> Gateway {
        let mut pairs = vec![
            ("security_token", "bench"),
            ("connect_url", ""),
            ("close_url", ""),
            ("forward_url", ""),
            ("bind", "127.0.0.1"),
            ("http_port", "0"),
            ("shutdown_timeout", "1s"),
        ];
        pairs.extend_from_slice(extra);
        let settings = Settings::from_pairs(pairs);
        let config = Config::from_settings(&settings).expect("config");
        let server = Server::bind(config, None).await.expect("binds");
        let addr = server.local_addr();
        let gateway = server.gateway();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Gateway { addr, gateway, stop: Some(stop), handle }
    }

    fn url(&self) -> String {
        format!("ws://{}/connect/", self.addr)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.handle).await;
    }
}

fn parse(args: &[&str]) -> Command {
    let mut argv = vec!["rainbow-bench"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("arguments parse").command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_measures_the_gateway_process() {
    let gw = Gateway::start().await;
    let url = gw.url();
    let pid = std::process::id().to_string();
    let Command::Idle(args) = parse(&[
        "idle",
        "--url",
        &url,
        "-n",
        "60",
        "--hold",
        "1",
        "--pid",
        &pid,
        "--warmup",
        "5",
        "--settle",
        "0.2",
        "--sources",
        "127.0.0.2-127.0.0.4",
        "--no-progress",
    ]) else {
        panic!("not idle")
    };
    let result = runs::idle(&args).await.expect("idle run");
    assert_eq!(result.connections_ok, 60);
    assert_eq!(result.connections_failed, 0);
    assert_eq!(result.connections_held, 60);
    assert_eq!(result.processes, 1);
    assert!(result.rss_before_kib > 0 && result.rss_after_kib > 0);
    assert!(result.rss_per_connection_bytes.is_some());
    assert!(result.bench_rss_kib > 0);
    let line = serde_json::to_string(&result).expect("serializes");
    assert!(line.contains("\"rss_per_connection_bytes\""));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_answer_pings() {
    let gw = Gateway::start_with(&[("ping_interval", "1s"), ("pong_timeout", "1s")]).await;
    let url = gw.url();
    let pid = std::process::id().to_string();
    let Command::Idle(args) =
        parse(&["idle", "--url", &url, "-n", "20", "--hold", "4", "--pid", &pid, "--warmup", "0", "--no-progress"])
    else {
        panic!("not idle")
    };
    let result = runs::idle(&args).await.expect("idle run");
    assert_eq!(result.connections_held, 20, "drops: {:?}", result.drops);
    assert_eq!(result.connections_dropped, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_counts_refusals() {
    let gw = Gateway::start().await;
    // Nothing listens on the gateway's port once it is stopped.
    let url = gw.url();
    gw.stop().await;
    let Command::Connect(args) = parse(&["connect", "--url", &url, "-n", "5", "--rate", "0", "--no-progress"]) else {
        panic!("not connect")
    };
    let result = runs::connect(&args).await.expect("connect run");
    assert_eq!(result.connections_ok, 0);
    assert_eq!(result.connections_failed, 5);
    assert_eq!(result.errors.get("connect: connection refused"), Some(&5), "{:?}", result.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_counts_http_refusals() {
    let gw = Gateway::start_with(&[("max_connections", "3")]).await;
    let url = gw.url();
    let Command::Connect(args) = parse(&["connect", "--url", &url, "-n", "5", "--rate", "0", "--no-progress"]) else {
        panic!("not connect")
    };
    let result = runs::connect(&args).await.expect("connect run");
    assert_eq!(result.connections_ok, 3);
    assert_eq!(result.connections_failed, 2);
    assert_eq!(result.errors.get("http 503"), Some(&2), "{:?}", result.errors);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_splits_over_workers_and_prints_one_line() {
    let gw = Gateway::start().await;
    let url = gw.url();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rainbow-bench"))
        .args(["connect", "--url", &url, "-n", "90", "--rate", "500", "--per-process", "40", "--no-progress"])
        .output()
        .await
        .expect("runs the binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(v["bench"], "connect");
    assert_eq!(v["connections_ok"], 90);
    assert_eq!(v["connections_failed"], 0);
    // Three workers of at most 40 each, plus the parent.
    assert_eq!(v["processes"], 4);
    gw.stop().await;
}

/// `rainbow-bench backend` in this process, on a free port.
async fn backend() -> (String, tokio::task::JoinHandle<()>) {
    let server = rainbow_bench::backend::Backend::bind("127.0.0.1:0".parse().expect("addr"), "{\"ok\":true}".into())
        .await
        .expect("backend binds");
    let url = format!("http://{}", server.local_addr().expect("addr"));
    (url, tokio::spawn(server.serve(std::future::pending())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_every_subscriber_at_qos_0_and_1() {
    let (be, _backend) = backend().await;
    let connect = format!("{be}/connect/");
    let gw = Gateway::start_with(&[("connect_url", &connect)]).await;
    let url = gw.url();
    for qos in ["0", "1"] {
        let Command::Fanout(args) = parse(&[
            "fanout",
            "--url",
            &url,
            "-n",
            "40",
            "--qos",
            qos,
            "--publish-rate",
            "20",
            "--duration",
            "0.5",
            "--pause",
            "0.1",
            "--no-progress",
        ]) else {
            panic!("not fanout")
        };
        let result = rainbow_bench::fanout::fanout(&args).await.expect("fanout run");
        assert_eq!(result.connections_ok, 40);
        assert_eq!(result.processes, 1);
        let step = &result.steps[0];
        assert_eq!(step.published, 10, "{step:?}");
        assert_eq!(step.deliveries, 400, "{step:?}");
        assert_eq!((result.lost, result.duplicates, result.unparsed), (0, 0, 0));
        assert!(step.latency.p50_ms > 0.0);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_measures_the_gateway_and_the_backend_directly() {
    let (be, _backend) = backend().await;
    let forward = format!("{be}/message/{{message_type}}/");
    let gw = Gateway::start_with(&[("forward_url", &forward), ("max_message_rate", "0")]).await;
    let url = gw.url();
    let direct = format!("{be}/message/1/");
    let Command::Rpc(args) = parse(&[
        "rpc",
        "--url",
        &url,
        "--clients",
        "3",
        "--window",
        "2",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--direct-url",
        &direct,
        "--no-progress",
    ]) else {
        panic!("not rpc")
    };
    let result = rainbow_bench::rpc::rpc(&args).await.expect("rpc run");
    let (g, d) = (result.gateway.expect("gateway leg"), result.direct.expect("direct leg"));
    assert_eq!((g.concurrency, d.concurrency), (6, 6));
    assert!(g.round_trips > 10 && d.round_trips > 10, "{g:?} {d:?}");
    assert_eq!((g.failed, d.failed), (0, 0));
    assert!(result.overhead_p50_us.is_some() && result.throughput_ratio.is_some());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_closes_and_reopens_on_schedule() {
    let gw = Gateway::start().await;
    let url = gw.url();
    let pid = std::process::id().to_string();
    let Command::Churn(args) = parse(&[
        "churn",
        "--url",
        &url,
        "-n",
        "20",
        "--fraction",
        "2",
        "--duration",
        "2",
        "--sample-every",
        "0.5",
        "--baseline-at",
        "1",
        "--pid",
        &pid,
        "--no-progress",
    ]) else {
        panic!("not churn")
    };
    let result = rainbow_bench::churn::churn(&args).await.expect("churn run");
    // 20 connections × 2 per second × 2 s = 80 reopenings, give or take the edges.
    assert!((60..=100).contains(&result.reopened), "{result:?}");
    assert_eq!(result.handshake_failures, 0);
    assert!(result.samples.len() >= 4);
    assert!(result.rss_baseline_kib > 0 && result.rss_end_kib > 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_fanout_over_workers_counts_every_delivery() {
    let (be, _backend) = backend().await;
    let connect = format!("{be}/connect/");
    let gw = Gateway::start_with(&[("connect_url", &connect)]).await;
    let url = gw.url();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rainbow-bench"))
        .args(["fanout", "--url", &url, "-n", "40", "--per-process", "15", "--publish-rate", "10", "--duration", "0.5"])
        .args(["--pause", "0.1", "--no-progress"])
        .output()
        .await
        .expect("runs the binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(v["processes"], 4);
    assert_eq!(v["connections_ok"], 40);
    assert_eq!(v["steps"][0]["deliveries"], 200);
    assert_eq!(v["lost"], 0);
    gw.stop().await;
}

/// Several `--url`s: connection i goes to URL i mod n, across worker
/// processes too, so each gateway holds its even share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_every_url() {
    let (a, b) = (Gateway::start().await, Gateway::start().await);
    let (url_a, url_b) = (a.url(), b.url());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rainbow-bench"))
        .args(["idle", "--url", &url_a, "--url", &url_b, "-n", "41", "--per-process", "15", "--hold", "3"])
        .args(["--pid", &std::process::id().to_string(), "--warmup", "0", "--settle", "0", "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs the binary");
    // While the connections are held, each gateway has its share.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let held = (a.gateway.hub.len(), b.gateway.hub.len());
        if held == (21, 20) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "gateways hold {held:?}, expected (21, 20)");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().await.expect("bench ends");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(v["connections_ok"], 41);
    assert_eq!(v["url"], format!("{url_a} {url_b}"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_clients_can_be_paced() {
    let (be, _backend) = backend().await;
    let forward = format!("{be}/message/{{message_type}}/");
    let gw = Gateway::start_with(&[("forward_url", &forward)]).await;
    let url = gw.url();
    let Command::Rpc(args) = parse(&[
        "rpc",
        "--url",
        &url,
        "--clients",
        "3",
        "--rate-per-client",
        "20",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--no-progress",
    ]) else {
        panic!("not rpc")
    };
    let result = rainbow_bench::rpc::rpc(&args).await.expect("rpc run");
    let g = result.gateway.expect("gateway leg");
    // 3 clients × 20/s × 1 s, give or take the window's edges.
    assert!((45..=75).contains(&g.round_trips), "{g:?}");
    assert_eq!(g.failed, 0);
    assert_eq!(result.rate_per_client, Some(20.0));
    gw.stop().await;
}

/// Every attack runs and is reported; the ones a small `max_message_size`
/// ends are ended with 1009, the silent ones stay open for their time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_reports_every_attack_and_how_the_gateway_ended_it() {
    let (be, _backend) = backend().await;
    let forward = format!("{be}/message/{{message_type}}/");
    let gw = Gateway::start_with(&[("forward_url", &forward), ("max_message_size", "1024")]).await;
    let url = gw.url();
    let pid = std::process::id().to_string();
    let Command::Hostile(args) = parse(&[
        "hostile",
        "--url",
        &url,
        "-n",
        "16",
        "--attack-secs",
        "1",
        "--pause",
        "0.1",
        "--duration",
        "2.5",
        "--dup-payload",
        "4096",
        "--dup-rate",
        "50",
        "--rel-rate",
        "500",
        "--ping-rate",
        "100",
        "--sources",
        "127.0.0.2-127.0.0.4",
        "--pid",
        &pid,
        "--no-progress",
    ]) else {
        panic!("not hostile")
    };
    let result = rainbow_bench::hostile::hostile(&args).await.expect("hostile run");
    assert_eq!(result.connections_started, 16);
    let names: Vec<&str> = rainbow_bench::hostile::wire::Attack::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(
        result.per_attack.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(),
        names.iter().copied().collect()
    );
    for (name, a) in &result.per_attack {
        assert!(a.attempts >= 2 && a.finished >= 1, "{name}: {a:?}");
        assert_eq!(a.not_started, 0, "{name}: {a:?}");
    }
    let big = &result.per_attack["big-header"];
    assert_eq!(big.outcomes.get("closed 1009").map(|o| o.count), Some(big.finished), "{big:?}");
    assert!(big.outcomes["closed 1009"].after.expect("timed").max_ms < 1000.0);
    assert!(result.per_attack["dup-flood"].ended_by_gateway >= 1, "{:?}", result.per_attack["dup-flood"]);
    assert!(result.per_attack["silent"].outcomes.contains_key("open"), "{:?}", result.per_attack["silent"]);
    assert!(result.per_attack["rel-flood"].frames_sent > 100);
    assert!(result.gateway_rss_start_kib.is_some() && result.gateway_rss_max_kib.is_some());
    assert!(!result.stopped_early);
    let line = serde_json::to_string(&result).expect("serializes");
    assert!(line.contains("\"per_attack\""));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_hostile_over_workers_prints_one_line() {
    let gw = Gateway::start().await;
    let url = gw.url();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rainbow-bench"))
        .args(["hostile", "--url", &url, "-n", "10", "--per-process", "4", "--attacks", "silent,rel-flood"])
        .args(["--rel-rate", "100", "--attack-secs", "0.5", "--pause", "0", "--duration", "1.5", "--no-progress"])
        .output()
        .await
        .expect("runs the binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(v["bench"], "hostile");
    assert_eq!(v["processes"], 4);
    assert_eq!(v["connections_started"], 10);
    assert!(v["per_attack"]["silent"]["attempts"].as_u64() >= Some(5), "{v}");
    assert!(v["per_attack"]["rel-flood"]["frames_sent"].as_u64() > Some(0), "{v}");
    assert_eq!(v["plan"]["rel_rate"], 100.0);
    gw.stop().await;
}
