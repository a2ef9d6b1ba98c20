//! This node's status, one way for everyone who shows it: `/serverinfo/`
//! (HTML and `?cluster=1` JSON) and the cluster's heartbeats, which carry
//! the same summary to the other nodes.
//!
//! Public pages show counts and channel names only: never payloads, cookies,
//! identities or tokens.

use serde_json::json;

use crate::state::Gateway;

/// Process figures read from `/proc/self` (Linux); zero elsewhere.
pub struct ProcessStats {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
}

/// This process's figures now.
pub fn process_stats() -> ProcessStats {
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
        "workers": gw.backend.workers().snapshot(std::time::Instant::now()).iter().map(|w| json!({
            "name": &*w.name, "credits": w.credits, "in_flight": w.in_flight,
            "draining": w.draining, "attached_seconds": w.attached_seconds,
        })).collect::<Vec<_>>(),
        "worker_tasks_queued": gw.backend.workers().queued(),
    })
}

/// The machine's host name (Linux), else empty.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let s = process_stats();
        assert!(s.rss_bytes > 0);
    }
}
