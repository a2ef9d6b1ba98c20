//! `rainbow-bench`: runs one benchmark against a gateway and prints its result
//! as one JSON line on stdout. See the `rainbow_bench` library for the parts.

#![warn(missing_docs)]

use std::process::ExitCode;

use clap::Parser;
use rainbow_bench::backend::{Backend, Listening};
use rainbow_bench::cli::{BackendArgs, Cli, Command};
use rainbow_bench::{churn, fanout, rpc, runs};
use serde::Serialize;

fn emit<T: Serialize>(result: anyhow::Result<T>) -> ExitCode {
    match result.and_then(|value| Ok(serde_json::to_string(&value)?)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rainbow-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT (or forever if neither can be watched).
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// `rainbow-bench backend`: prints its one JSON line once listening, serves
/// until SIGTERM/SIGINT, then prints its counts on stderr.
async fn backend(args: &BackendArgs) -> ExitCode {
    let addr = std::net::SocketAddr::new(args.bind, args.port);
    let server = match Backend::bind(addr, bytes::Bytes::from(args.reply.clone())).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rainbow-bench backend: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let counts = server.counts();
    let listening =
        server.local_addr().map(|a| Listening { bench: "backend", listening: a.to_string(), pid: std::process::id() });
    let code = emit(listening);
    if code != ExitCode::SUCCESS {
        return code;
    }
    server.serve(terminated()).await;
    eprintln!("{}", counts.summary());
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Idle(args) => emit(runs::idle(&args).await),
        Command::Connect(args) => emit(runs::connect(&args).await),
        // Boxed: these futures are large and would bloat main's.
        Command::Fanout(args) => emit(Box::pin(fanout::fanout(&args)).await),
        Command::Rpc(args) => emit(Box::pin(rpc::rpc(&args)).await),
        Command::Churn(args) => emit(Box::pin(churn::churn(&args)).await),
        Command::Backend(args) => Box::pin(backend(&args)).await,
        Command::Worker(args) => match runs::worker(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rainbow-bench worker: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
