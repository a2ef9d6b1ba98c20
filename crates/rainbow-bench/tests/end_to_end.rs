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
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Gateway { addr, stop: Some(stop), handle }
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
