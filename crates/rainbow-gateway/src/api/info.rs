//! Operator endpoints: liveness (`/hello/`, `/healthz`), the public node page
//! (`/serverinfo/`), Prometheus metrics (`/metrics`) and the signed config
//! reload (`/updateconfig/`).
//!
//! `/serverinfo/` is public, so it shows counts and channel names only: never
//! payloads, cookies, identities or tokens.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use tracing::{info, warn};

use super::{answer, failure, param, query_pairs, signed};
use crate::state::Gateway;

/// `GET /hello/` → `ok`.
pub async fn hello() -> &'static str {
    "ok"
}

/// `GET /healthz` → JSON with the connection count.
pub async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    let status = if gw.is_shutting_down() { "shutting_down" } else { "ok" };
    answer(json!({"status": status, "connections": gw.hub.len()}))
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], gw.metrics.render())
        .into_response()
}

/// Process figures read from `/proc/self` (Linux); zero elsewhere.
struct ProcessStats {
    rss_bytes: u64,
    cpu_seconds: f64,
}

fn process_stats() -> ProcessStats {
    let page = 4096u64;
    let rss_bytes = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page);
    // Fields 14 and 15 (utime, stime) in clock ticks, counted after the
    // parenthesised command name, which may contain spaces.
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    ProcessStats { rss_bytes, cpu_seconds }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// This node's summary: what `/serverinfo/?cluster=1` lists per node, and
/// what a clustered node publishes with its heartbeat. At most
/// `max_channels` channels are listed (the largest); `channel_count` is exact.
pub fn node_summary(gw: &Gateway, max_channels: usize) -> serde_json::Value {
    let config = gw.config();
    let stats = process_stats();
    let uptime = gw.started.elapsed().as_secs_f64();
    let cpu_percent = if uptime > 0.0 { stats.cpu_seconds / uptime * 100.0 } else { 0.0 };
    let mut channels = gw.hub.channel_counts();
    let channel_count = channels.len();
    if channels.len() > max_channels {
        channels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        channels.truncate(max_channels);
    }
    json!({
        "node": format!("{:08x}", gw.hub.node_tag()),
        "host": hostname(),
        "port": config.http_port,
        "pid": std::process::id(),
        "uptime_seconds": uptime.round(),
        "cpu_seconds": stats.cpu_seconds,
        "cpu_percent": (cpu_percent * 10.0).round() / 10.0,
        "memory_bytes": stats.rss_bytes,
        "connections": gw.hub.len(),
        "channel_count": channel_count,
        "channels": channels.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "workers": gw.workers.snapshot(std::time::Instant::now()).iter().map(|w| json!({
            "name": &*w.name, "credits": w.credits, "in_flight": w.in_flight,
            "draining": w.draining, "attached_seconds": w.attached_seconds,
        })).collect::<Vec<_>>(),
        "worker_tasks_queued": gw.workers.queued(),
    })
}

/// The machine's host name (Linux), else empty.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// `GET /serverinfo/`: this node as HTML, or every node of the cluster as
/// JSON with `?cluster=1`.
pub async fn server_info(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let query = query_pairs(&parts.uri);
    let config = gw.config();
    let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let stats = process_stats();
    let channels = gw.hub.channel_counts();
    let workers = gw.workers.snapshot(std::time::Instant::now());
    if param(&query, "cluster").is_some_and(|v| v != "0") {
        let here = node_summary(&gw, usize::MAX);
        let Some(node) = gw.cluster.node() else {
            return answer(json!({"status": 0, "nodes": [here]}));
        };
        return match node.nodes().await {
            Ok(mut nodes) => {
                // This node's own entry is the live one, not its last heartbeat.
                nodes.retain(|n| n["node"] != here["node"]);
                nodes.insert(0, here);
                answer(json!({"status": 0, "nodes": nodes}))
            }
            Err(e) => {
                warn!(side = "broker", "serverinfo: {e}");
                answer(json!({"status": 1, "msg": "cluster unavailable", "nodes": [here]}))
            }
        };
    }
    let uptime = gw.started.elapsed().as_secs_f64();
    let cpu_percent = if uptime > 0.0 { stats.cpu_seconds / uptime * 100.0 } else { 0.0 };
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Rainbow server info</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}</style></head><body><h1>Rainbow</h1><table>",
    );
    let rows = [
        ("Node", format!("{}:{}", escape(&host), config.http_port)),
        ("Process", format!("pid {}, up {:.0} s", std::process::id(), uptime)),
        ("CPU", format!("{:.1} s ({:.1} % average)", stats.cpu_seconds, cpu_percent)),
        ("Memory (RSS)", format!("{:.1} MiB", stats.rss_bytes as f64 / 1048576.0)),
        ("Connections", gw.hub.len().to_string()),
        ("Channels", channels.len().to_string()),
        ("Workers", format!("{} attached, {} tasks queued", workers.len(), gw.workers.queued())),
    ];
    for (k, v) in rows {
        let _ = write!(html, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    html.push_str("</table><h2>Channels</h2><table><tr><th>Channel</th><th>Subscribers</th></tr>");
    for (channel, count) in &channels {
        let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(channel));
    }
    html.push_str(
        "</table><h2>Workers</h2><table><tr><th>Name</th><th>Credits</th><th>In flight</th><th>State</th></tr>",
    );
    for w in &workers {
        let state = if w.draining { "draining" } else { "ready" };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{state}, {} s</td></tr>",
            escape(&w.name),
            w.credits,
            w.in_flight,
            w.attached_seconds
        );
    }
    html.push_str("</table></body></html>");
    Html(html).into_response()
}

/// `GET /updateconfig/` (signed): re-reads the config file.
pub async fn update_config(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(response) = signed(&gw, "updateconfig", &parts, body).await {
        return response;
    }
    match gw.reload() {
        Ok(restart) => {
            gw.metrics.api_call("updateconfig", "ok");
            if restart.is_empty() {
                info!("configuration reloaded");
            } else {
                warn!(keys = ?restart, "configuration reloaded; these keys take effect only after a restart");
            }
            answer(json!({"status": 0, "restart_required": restart}))
        }
        Err(e) => {
            gw.metrics.api_call("updateconfig", "config_error");
            warn!(side = "config", "reload failed: {e}");
            failure(&e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn reads_its_own_process() {
        let s = process_stats();
        assert!(s.rss_bytes > 0);
    }
}
