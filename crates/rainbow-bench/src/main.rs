//! `rainbow-bench`: runs one benchmark against a gateway and prints its result
//! as one JSON line on stdout. See the `rainbow_bench` library for the parts.

#![warn(missing_docs)]

use std::process::ExitCode;

use clap::Parser;
use rainbow_bench::backend::{Backend, Listening};
use rainbow_bench::cli::{BackendArgs, Cli, Command, FloorArgs};
use rainbow_bench::floor::Floor;
use rainbow_bench::{churn, fanout, hostile, rpc, runs};
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
    match Backend::bind(addr, bytes::Bytes::from(args.reply.clone())).await.map(|b| b.echo(args.echo)) {
        Ok(server) => {
            let counts = server.counts();
            let listening = server.local_addr();
            serve("backend", listening, server.serve(terminated()), move || counts.summary()).await
        }
        Err(e) => {
            eprintln!("rainbow-bench backend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rainbow-bench floor`, as `backend`.
async fn floor(args: &FloorArgs) -> ExitCode {
    let addr = std::net::SocketAddr::new(args.bind, args.port);
    match Floor::bind(addr, args.threads, args.forward.as_deref()).await {
        Ok(server) => {
            let counts = server.counts();
            let listening = server.local_addr();
            serve("floor", listening, server.serve(terminated()), move || counts.summary()).await
        }
        Err(e) => {
            eprintln!("rainbow-bench floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a server's JSON line (`{"bench": NAME, "listening": ..., "pid": ...}`),
/// runs it to its end, then prints its summary on stderr.
async fn serve(
    name: &'static str,
    listening: anyhow::Result<std::net::SocketAddr>,
    running: impl std::future::Future<Output = ()>,
    summary: impl FnOnce() -> String,
) -> ExitCode {
    let listening = listening.map(|a| Listening { bench: name, listening: a.to_string(), pid: std::process::id() });
    let code = emit(listening);
    if code != ExitCode::SUCCESS {
        return code;
    }
    running.await;
    eprintln!("{}", summary());
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A worker may run single-threaded: its connections need no parallelism
    // of their own when there are several workers, and one thread per
    // process means fewer cross-thread wake-ups on the cores it shares with
    // the server being measured.
    let threads = match &cli.command {
        Command::Worker(args) => args.threads,
        _ => 0,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(threads);
        }
        builder.enable_all().build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("rainbow-bench: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Idle(args) => emit(runs::idle(&args).await),
        Command::Connect(args) => emit(runs::connect(&args).await),
        // Boxed: these futures are large and would bloat main's.
        Command::Fanout(args) => emit(Box::pin(fanout::fanout(&args)).await),
        Command::Rpc(args) => emit(Box::pin(rpc::rpc(&args)).await),
        Command::Churn(args) => emit(Box::pin(churn::churn(&args)).await),
        Command::Hostile(args) => emit(Box::pin(hostile::hostile(&args)).await),
        Command::Backend(args) => Box::pin(backend(&args)).await,
        Command::Floor(args) => Box::pin(floor(&args)).await,
        Command::Worker(args) => match runs::worker(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rainbow-bench worker: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
