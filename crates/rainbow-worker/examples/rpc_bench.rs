//! A closed-loop request/reply benchmark: `--connections` clients each send a
//! message, wait for its reply, and send the next, for `--seconds`; prints
//! throughput and latency percentiles. Point the gateway at a worker
//! (`worker_route = workers` plus `echo_worker`) or at a webhook (this
//! program's `webhook` mode is a minimal keep-alive HTTP echo backend) to
//! compare the two.
//!
//! ```sh
//! rpc_bench webhook --port 8000                      # an HTTP echo backend
//! rpc_bench run --url ws://127.0.0.1:1984/connect/ --connections 50 --seconds 10 --qos 1
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use rainbow_client::{Client, ClientConfig, Qos};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(about = "Rainbow request/reply benchmark")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure: closed-loop clients sending messages and awaiting replies.
    Run {
        /// The gateway's client endpoint.
        #[arg(long, default_value = "ws://127.0.0.1:1984/connect/")]
        url: String,
        /// Concurrent clients (each has one request in flight).
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Measured seconds (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// qos of the requests (1 or 2).
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Message type.
        #[arg(long, default_value_t = 1)]
        message_type: u16,
    },
    /// Serve a minimal HTTP/1.1 keep-alive echo backend: every request is
    /// answered 200 with its body (connect hooks get `{"status": "success"}`).
    Webhook {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
}

#[tokio::main]
async fn main() {
    match Args::parse().command {
        Command::Run { url, connections, seconds, qos, size, message_type } => {
            run(url, connections, Duration::from_secs(seconds), qos, size, message_type).await
        }
        Command::Webhook { port } => webhook(port).await,
    }
}

async fn run(url: String, connections: usize, duration: Duration, qos: u8, size: usize, message_type: u16) {
    let qos = match qos {
        2 => Qos::ExactlyOnce,
        _ => Qos::AtLeastOnce,
    };
    let payload = Bytes::from(vec![b'x'; size]);
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + Duration::from_millis(500);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let config = ClientConfig::new(url.clone()).request_timeout(Duration::from_secs(30));
        let (client, _events) = match Client::connect(config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rpc_bench: cannot connect: {e}");
                std::process::exit(1);
            }
        };
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let _events = _events;
            tokio::time::sleep_until(start.into()).await;
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = client.send(message_type, payload.clone(), qos).await;
                let took = sent.elapsed();
                if result.is_err() && client.is_closed() {
                    eprintln!("rpc_bench: the gateway closed a connection: {result:?} (is max_message_rate 0?)");
                    errors += 1;
                    break;
                }
                if sent >= measure_from && Instant::now() <= end {
                    match result {
                        Ok(_) => latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX)),
                        Err(_) => errors += 1,
                    }
                }
            }
            client.close().await;
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() { 0.0 } else { f64::from(all[((all.len() - 1) as f64 * p) as usize]) / 1000.0 }
    };
    let rate = all.len() as f64 / duration.as_secs_f64();
    println!(
        "{{\"connections\": {connections}, \"qos\": {}, \"size\": {size}, \"seconds\": {}, \"replies\": {}, \"errors\": {errors}, \"per_second\": {rate:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        qos.as_u8(),
        duration.as_secs(),
        all.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}

async fn webhook(port: u16) {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rpc_bench: cannot listen on {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("webhook echo backend on http://127.0.0.1:{port}/");
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream));
    }
}

/// One keep-alive HTTP/1.1 connection: read a request (headers and a
/// `Content-Length` body), answer with the body, repeat.
async fn serve(mut stream: tokio::net::TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = if head.starts_with("get") && head.contains("/connect") {
            br#"{"status": "success"}"#.to_vec()
        } else {
            buf[head_end..head_end + length].to_vec()
        };
        buf.drain(..head_end + length);
        let mut out = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
