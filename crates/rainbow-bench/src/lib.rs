//! `rainbow-bench`: load and memory benchmarks for the Rainbow gateway.
//!
//! The tool opens many real WebSocket connections to a running gateway over
//! loopback and reports what they cost, as one JSON line on stdout per run
//! (progress bars go to stderr). The pieces:
//!
//! - [`cli`]: the command line (`idle`, `connect`, and the hidden `worker`);
//! - [`sources`]: the client source addresses (127.0.0.2, 127.0.0.3, ...) that
//!   connections are spread over, so ephemeral ports never run out;
//! - [`conn`]: one connection — bind, connect, WebSocket handshake with small
//!   buffers, then an idle loop that only answers pings;
//! - [`engine`]: one process's share of the load — paced opening, counting,
//!   holding until released — reported as [`engine::Event`]s;
//! - [`fleet`]: runs that share in this process, or splits the load over
//!   worker processes (one process cannot hold more than ~19,000 sockets here)
//!   and merges their event streams;
//! - [`runs`]: the benchmarks themselves, built on a fleet;
//! - [`report`]: the JSON results and the latency statistics;
//! - [`procfs`]: RSS and CPU time of a process from `/proc`;
//! - [`progress`]: the indicatif bars.
//!
//! Later benchmarks (fan-out through `/send/`, forward throughput) add a
//! connection behaviour in [`conn`] and a run in [`runs`]; the fleet, engine
//! and reporting stay as they are.

#![warn(missing_docs)]

pub mod cli;
pub mod conn;
pub mod engine;
pub mod fleet;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod runs;
pub mod sources;
