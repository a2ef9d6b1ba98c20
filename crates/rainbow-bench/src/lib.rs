//! `rainbow-bench`: load and memory benchmarks for the Rainbow gateway.
//!
//! The tool opens many real WebSocket connections to a running gateway over
//! loopback and reports what they cost, as one JSON line on stdout per run
//! (progress bars go to stderr). The pieces:
//!
//! - [`cli`]: the command line (`idle`, `connect`, `fanout`, `rpc`, `churn`,
//!   `hostile`, `backend`, `floor`, and the hidden `worker`);
//! - [`sources`]: the client source addresses (127.0.0.2, 127.0.0.3, ...) that
//!   connections are spread over, so ephemeral ports never run out;
//! - [`conn`]: one connection — bind, connect, WebSocket handshake with small
//!   buffers, then an idle loop that only answers pings;
//! - [`clients`]: what a connection does beyond idling: fan-out subscriber,
//!   rpc client (closed loop or paced);
//! - [`engine`]: one process's share of the load — paced opening, counting,
//!   holding until released — reported as [`engine::Event`]s;
//! - [`fleet`]: runs that share in this process, or splits the load over
//!   worker processes (one process cannot hold more than ~19,000 sockets here)
//!   and merges their event streams;
//! - [`runs`]: the `idle` and `connect` benchmarks, built on a fleet, and the
//!   helpers of the others: [`fanout`], [`rpc`] (with its direct baseline
//!   over [`http`]) and [`churn`];
//! - [`hostile`]: hostile clients cycling through attacks (silent,
//!   slowloris, stalled bodies, floods of duplicates, RELs and pings, a
//!   lone frame header), and how the gateway ended each attempt: the
//!   attacks' bytes and parsers in [`hostile::wire`], their IO in
//!   [`hostile::attack`];
//! - [`stats`]: what connections count beyond opening (deliveries, round
//!   trips, reopenings), shipped from workers to the parent;
//! - [`latency`]: latency histograms (record, ship, merge, summarise);
//! - [`stamp`]: the stamped payloads of the fan-out benchmark;
//! - [`sign`]: signatures of the gateway's API calls (docs/protocol.md §7);
//! - [`http`]: a lean HTTP/1.1 keep-alive client;
//! - [`backend`]: `rainbow-bench backend`, the benchmarks' own fast backend;
//! - [`floor`]: `rainbow-bench floor`, a server doing the least possible (one
//!   `send(2)` per fan-out delivery, one HTTP call per rpc message), to
//!   measure the machine's own limit;
//! - [`report`]: the JSON results and the latency statistics;
//! - [`procfs`]: RSS and CPU time of a process from `/proc`;
//! - [`progress`]: the indicatif bars.
//!
//! A new benchmark adds a connection behaviour ([`engine::Behaviour`], in
//! [`clients`]) and a run; the fleet, engine and reporting stay as they are.

#![warn(missing_docs)]

pub mod backend;
pub mod churn;
pub mod cli;
pub mod clients;
pub mod conn;
pub mod engine;
pub mod fanout;
pub mod fleet;
pub mod floor;
pub mod hostile;
pub mod http;
pub mod latency;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod rpc;
pub mod runs;
pub mod sign;
pub mod sources;
pub mod stamp;
pub mod stats;
