//! `rainbow-bench`: runs one benchmark against a gateway and prints its result
//! as one JSON line on stdout. See the `rainbow_bench` library for the parts.

#![warn(missing_docs)]

use std::process::ExitCode;

use clap::Parser;
use rainbow_bench::cli::{Cli, Command};
use rainbow_bench::runs;
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

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Idle(args) => emit(runs::idle(&args).await),
        Command::Connect(args) => emit(runs::connect(&args).await),
        Command::Worker(args) => match runs::worker(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rainbow-bench worker: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
