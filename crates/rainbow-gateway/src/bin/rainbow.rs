//! `rainbow`: the modern command line. `rainbow serve` runs the gateway,
//! `rainbow client` talks to one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rainbow_gateway::config::Origin;
use rainbow_gateway::{Settings, init_tracing, load_config, server};

/// Rainbow: a realtime long-connection gateway.
#[derive(Parser)]
#[command(name = "rainbow", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Talk to a gateway as a client.
    Client(rainbow_client::cli::ClientArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file: INI (the original rainbow.ini) or TOML (by .toml extension).
    #[arg(short = 'c', long = "config", visible_short_alias = 'f')]
    config: Option<PathBuf>,
    /// Port (overrides http_port).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Listen address (overrides bind).
    #[arg(long)]
    bind: Option<String>,
    /// Any key as KEY=VALUE (repeatable); wins over file and environment.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

async fn serve(args: ServeArgs) -> ExitCode {
    init_tracing();
    let mut cli = Settings::default();
    if let Some(port) = args.port {
        cli.set("http_port", &port.to_string(), Origin::Cli);
    }
    if let Some(bind) = &args.bind {
        cli.set("bind", bind, Origin::Cli);
    }
    for pair in &args.set {
        let Some((key, value)) = pair.split_once('=') else {
            eprintln!("config error: --set expects KEY=VALUE, got {pair:?}");
            return ExitCode::from(2);
        };
        cli.set(key, value, Origin::Cli);
    }
    let config = match load_config(args.config.as_deref(), &cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let reloader = args
        .config
        .clone()
        .map(|file| Box::new(move || load_config(Some(&file), &cli)) as rainbow_gateway::state::Reloader);
    match server::run_until_signal(config, reloader).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Client(args) => match rainbow_client::cli::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
