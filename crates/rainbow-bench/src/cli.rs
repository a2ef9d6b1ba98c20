//! The command line: `rainbow-bench idle`, `rainbow-bench connect`, and the
//! hidden `rainbow-bench worker` that a run starts when it splits itself over
//! processes.

use clap::{Args, Parser, Subcommand};

use crate::sources::Sources;

/// Load and memory benchmarks for the Rainbow gateway (loopback only).
///
/// Prints exactly one JSON line with the results on stdout; progress and
/// messages go to stderr.
#[derive(Parser, Debug)]
#[command(name = "rainbow-bench", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open N connections, hold them idle, report the gateway's RSS per connection.
    Idle(IdleArgs),
    /// Open N connections at a rate, report handshakes per second and latency.
    Connect(ConnectArgs),
    /// Run one share of a load and report JSON lines (started by the bench itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Settings shared by every benchmark that opens connections.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:1984/connect/")]
    pub url: String,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections started per second in total; 0 = as fast as --concurrency allows.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Handshakes in flight at most, per process.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Source addresses to spread connections over: a range A-B, a comma list, or `none`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.40")]
    pub sources: Sources,
    /// Seconds one connect + handshake may take before it counts as failed.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Connections per bench process; above it the run splits over worker processes.
    #[arg(long, default_value_t = 18_000)]
    pub per_process: usize,
    /// Allow a gateway address outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// `rainbow-bench idle`.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connection settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Seconds to hold the connections idle once all are open.
    #[arg(long, default_value_t = 20)]
    pub hold: u64,
    /// The gateway's process id (its /proc/PID/status is read).
    #[arg(long)]
    pub pid: u32,
    /// Connections opened and closed before the "before" RSS is read.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Seconds to wait after the warm-up before reading the "before" RSS.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
}

/// `rainbow-bench connect`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connection settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// The gateway's process id, to report its CPU time and RSS (optional).
    #[arg(long)]
    pub pid: Option<u32>,
}

/// `rainbow-bench worker` (hidden): one share of a load.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The gateway's WebSocket URL.
    #[arg(long)]
    pub url: String,
    /// Connections to open.
    #[arg(long)]
    pub connections: usize,
    /// Global number of the first connection.
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Connections started per second; 0 = unpaced.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Source addresses.
    #[arg(long, default_value = "none")]
    pub sources: Sources,
    /// Seconds one open may take.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Device id prefix.
    #[arg(long, default_value = "bench")]
    pub device_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn idle_needs_a_pid() {
        assert!(Cli::try_parse_from(["rainbow-bench", "idle", "--connections", "5"]).is_err());
        let cli = Cli::try_parse_from(["rainbow-bench", "idle", "-n", "5", "--pid", "1", "--sources", "none"])
            .expect("parses");
        let Command::Idle(args) = cli.command else { panic!("not idle") };
        assert_eq!((args.load.connections, args.pid, args.hold), (5, 1, 20));
        assert!(args.load.sources.is_empty());
    }
}
