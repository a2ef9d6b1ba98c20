//! `rainbow-server -f rainbow.ini [-p PORT]`: the original server's command
//! line, for drop-in replacement.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rainbow_gateway::config::Origin;
use rainbow_gateway::{Settings, init_tracing, load_config, server};

/// Rainbow gateway (compatible with the original rainbow-server).
#[derive(Parser)]
#[command(name = "rainbow-server", version)]
struct Args {
    /// Config file (INI with a [main] section, or TOML).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Port to listen on (overrides http_port).
    #[arg(short = 'p', long = "port")]
    port: Option<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let mut cli = Settings::default();
    if let Some(port) = args.port {
        cli.set("http_port", &port.to_string(), Origin::Cli);
    }
    let config = match load_config(Some(&args.file), &cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let file = args.file.clone();
    let reloader = Box::new(move || load_config(Some(&file), &cli));
    match server::run_until_signal(config, Some(reloader)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
