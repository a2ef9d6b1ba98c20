//! Operator endpoints: liveness (`/hello/`, `/healthz`), the public node page
//! (`/serverinfo/`), Prometheus metrics (`/metrics`) and the signed config
//! reload (`/updateconfig/`).
//!
//! `/serverinfo/` is public, so it shows counts and channel names only: never
//! payloads, cookies, identities or tokens (its figures come from
//! `crate::status`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use tracing::{info, warn};

use super::{answer, failure, signed};
use crate::handshake::{param, query_pairs};
use crate::state::Gateway;
use crate::status::{node_summary, process_stats};

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

/// `GET /serverinfo/`: this node as HTML, or every node of the cluster as
/// JSON with `?cluster=1`.
pub async fn server_info(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let query = query_pairs(&parts.uri);
    let config = gw.config();
    let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let stats = process_stats();
    let channels = gw.hub.channel_counts();
    let workers = gw.backend.workers().snapshot(std::time::Instant::now());
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
        ("Node", node_address(&host, config.http_port)),
        ("Process", format!("pid {}, up {:.0} s", std::process::id(), uptime)),
        ("CPU", format!("{:.1} s ({:.1} % average)", stats.cpu_seconds, cpu_percent)),
        ("Memory (RSS)", format!("{:.1} MiB", stats.rss_bytes as f64 / 1048576.0)),
        ("Connections", gw.hub.len().to_string()),
        ("Channels", channels.len().to_string()),
        ("Workers", format!("{} attached, {} tasks queued", workers.len(), gw.backend.workers().queued())),
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

/// Where this node was reached: the `Host` the client used (which names the
/// port unless it is the scheme's default), else the bound port alone.
fn node_address(host: &str, port: u16) -> String {
    match host.rsplit_once(':') {
        // A port, and not the tail of a bare IPv6 address ("[::1]" has none).
        Some((_, p)) if !host.ends_with(']') && p.parse::<u16>().is_ok() => escape(host),
        _ if host.is_empty() => format!(":{port}"),
        _ => format!("{}:{port}", escape(host)),
    }
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

    /// Found while writing docs/protocol.md: the port was shown twice.
    #[test]
    fn the_node_row_names_the_port_once() {
        assert_eq!(node_address("127.0.0.7:18984", 18984), "127.0.0.7:18984");
        assert_eq!(node_address("gw.example", 80), "gw.example:80");
        assert_eq!(node_address("[::1]:1984", 1984), "[::1]:1984");
        assert_eq!(node_address("[::1]", 1984), "[::1]:1984");
        assert_eq!(node_address("", 1984), ":1984");
    }
}
