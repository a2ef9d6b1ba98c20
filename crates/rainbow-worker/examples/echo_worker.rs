//! A fast echo worker: replies to every client message with its payload,
//! accepts every client. Used by the benchmark and the crash tests.
//!
//! ```sh
//! cargo run --release -p rainbow-worker --example echo_worker -- \
//!     --url ws://127.0.0.1:1984/worker/ --token qwe123 --credits 64
//! ```
//!
//! - `--ledger FILE` records every handled task key in FILE and answers a
//!   redelivered task from it, so each message is handled exactly once even
//!   when the process is killed with SIGKILL and restarted (the ledger is the
//!   "application state" here).
//! - `--delay-ms N` sleeps N ms in each handler (simulated work).
//! - SIGTERM/SIGINT drain and exit 0; SIGHUP drains and then re-executes the
//!   program (a graceful restart in place, same pid).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rainbow_worker::{FileDedup, Reply, StopSignal, Worker, WorkerConfig};

#[derive(Parser, Debug)]
#[command(about = "Rainbow echo worker")]
struct Args {
    /// The gateway's worker endpoint.
    #[arg(long, env = "RAINBOW_WORKER_URL", default_value = "ws://127.0.0.1:1984/worker/")]
    url: String,
    /// The gateway's security_token.
    #[arg(long, env = "RAINBOW_SECURITY_TOKEN")]
    token: String,
    /// Name shown in the gateway's logs and /serverinfo/.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Tasks handled at once.
    #[arg(long, default_value_t = 64)]
    credits: u32,
    /// Milliseconds of simulated work per message.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Ledger file for exactly-once handling across crashes.
    #[arg(long)]
    ledger: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
    let args = Args::parse();
    let config = WorkerConfig::new(&args.url, &args.token)
        .name(&args.name)
        .credits(args.credits)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2));
    let delay = Duration::from_millis(args.delay_ms);
    let mut worker = Worker::new(config).on_any_message(move |task, _api| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Reply::new(task.payload)
    });
    if let Some(path) = &args.ledger {
        match FileDedup::open(path) {
            Ok(ledger) => worker = worker.dedup(ledger),
            Err(e) => {
                eprintln!("echo_worker: cannot open the ledger {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    match worker.run_until_signal().await {
        Ok(Some(StopSignal::Hangup)) => restart(),
        Ok(_) => {}
        Err(e) => {
            eprintln!("echo_worker: {e}");
            std::process::exit(1);
        }
    }
}

/// SIGHUP: drained; run the (possibly updated) program again in this process.
#[cfg(unix)]
fn restart() {
    use std::os::unix::process::CommandExt;
    tracing::info!("drained after SIGHUP: restarting");
    let program =
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()));
    let error = std::process::Command::new(program).args(std::env::args_os().skip(1)).exec();
    eprintln!("echo_worker: cannot restart: {error}");
    std::process::exit(1);
}

#[cfg(not(unix))]
fn restart() {}
