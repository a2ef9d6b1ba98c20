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
    /// Run a live chat demo: the gateway, an in-process chat backend, and the
    /// chat page at http://HOST:PORT/.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Port (1984 by default; 1985..2003 are tried if it is taken).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Listen address; use 0.0.0.0 to let other machines join.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
}

async fn demo(args: DemoArgs) -> ExitCode {
    init_tracing();
    let backend = match rainbow_gateway::demo::ChatBackend::bind().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot start the demo backend: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = hex_token();
    let mut settings = Settings::from_pairs([("security_token", token.as_str()), ("bind", args.bind.as_str())]);
    settings.set("connect_url", &backend.connect_url(), Origin::Code);
    settings.set("forward_url", &backend.forward_url(), Origin::Code);
    settings.set("close_url", &backend.close_url(), Origin::Code);
    if let Some(port) = args.port {
        settings.set("http_port", &port.to_string(), Origin::Cli);
    }
    let config = match rainbow_gateway::Config::from_settings(&settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let server = match rainbow_gateway::Server::bind(config, None).await {
        Ok(s) => s.with_routes(rainbow_gateway::demo::page_routes()),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = server.local_addr().port();
    if let Err(e) = backend.serve(format!("http://127.0.0.1:{port}"), token) {
        eprintln!("error: cannot start the demo backend: {e}");
        return ExitCode::FAILURE;
    }
    let host = if args.bind == "0.0.0.0" { "localhost" } else { args.bind.as_str() };
    println!("\nRainbow demo: open http://{host}:{port}/ in two browser tabs and chat.\n");
    match server.run(server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A random token for the demo's signatures (128 bits from the OS-seeded RNG).
fn hex_token() -> String {
    format!("{:032x}", rand::random::<u128>())
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
        Command::Demo(args) => demo(args).await,
        Command::Client(args) => match rainbow_client::cli::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
