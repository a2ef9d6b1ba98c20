//! Process figures from `/proc`: resident memory and CPU time.
//!
//! `VmRSS` in `/proc/PID/status` is the resident set of the process: its heap,
//! stacks and the touched pages of its binary. It does **not** include kernel
//! memory such as socket buffers, so a connection's full cost is its RSS share
//! plus its kernel socket memory (see `/proc/net/sockstat`).
//!
//! CPU times in `/proc/PID/stat` are in clock ticks of `USER_HZ`, which Linux
//! fixes at 100 per second for user space on every architecture it supports.

use std::io;

/// Clock ticks per second of `/proc/PID/stat` times (Linux `USER_HZ`).
pub const USER_HZ: f64 = 100.0;

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// The calling process.
    Current,
    /// Another process, by id.
    Pid(u32),
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::Current => format!("/proc/self/{file}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }
}

/// Memory figures of a process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident set now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident set.
    pub peak_kib: u64,
    /// `RssAnon`: the anonymous (heap, stacks) part of the resident set.
    pub anon_kib: u64,
}

/// Parses the memory lines of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        peak_kib: field("VmHWM").unwrap_or(0),
        anon_kib: field("RssAnon").unwrap_or(0),
    })
}

/// Parses user + system CPU seconds from a `/proc/PID/stat` text.
pub fn parse_stat_cpu(text: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces,
    // so count fields after the last ')'. utime and stime are fields 14, 15.
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn invalid(what: &str, path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what} from {path}"))
}

/// Memory figures of a process.
pub fn memory(proc: Proc) -> io::Result<Memory> {
    let path = proc.path("status");
    let text = std::fs::read_to_string(&path)?;
    parse_status(&text).ok_or_else(|| invalid("VmRSS", &path))
}

/// User + system CPU seconds a process has used so far.
pub fn cpu_seconds(proc: Proc) -> io::Result<f64> {
    let path = proc.path("stat");
    let text = std::fs::read_to_string(&path)?;
    parse_stat_cpu(&text).ok_or_else(|| invalid("CPU times", &path))
}

/// Parses the busy CPU seconds of the whole machine from a `/proc/stat`
/// text: user, system, irq, softirq and steal of the `cpu` line. The `nice`
/// column (user time of processes at a positive nice value, such as a
/// background fuzzer) is left out: that work yields to anything at normal
/// or higher priority.
pub fn parse_machine_cpu(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let busy = [0usize, 2, 5, 6, 7].iter().map(|&i| v.get(i).copied().unwrap_or(0)).sum::<u64>();
    Some(busy as f64 / USER_HZ)
}

/// Busy CPU seconds of the whole machine since boot, positive-nice work
/// excepted (see [`parse_machine_cpu`]): compared with the server's and the
/// bench's own, it shows how much other work competed for the cores during a
/// measurement.
pub fn machine_cpu_seconds() -> io::Result<f64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_machine_cpu(&text).ok_or_else(|| invalid("CPU times", "/proc/stat"))
}

/// The soft limit of open files of this process, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&text)
}

/// Parses the soft "Max open files" limit of a `/proc/PID/limits` text.
pub fn parse_open_files_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let text = "Name:\trainbow\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nRssAnon:\t    8000 kB\n";
        assert_eq!(parse_status(text), Some(Memory { rss_kib: 10240, peak_kib: 20480, anon_kib: 8000 }));
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn stat_cpu_with_spaces_in_name() {
        let text = "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        assert_eq!(parse_stat_cpu(text), Some(3.0));
    }

    #[test]
    fn machine_cpu() {
        let text = "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 50 2 25 4500 20 1 1 0 0 0\n";
        // user + system + irq + softirq + steal = 100+50+3+2+1; nice, iowait and idle excluded.
        assert_eq!(parse_machine_cpu(text), Some(1.56));
        assert_eq!(parse_machine_cpu("intr 1 2\n"), None);
        assert!(machine_cpu_seconds().expect("own machine") > 0.0);
    }

    #[test]
    fn open_files() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(text), Some(20000));
    }

    #[test]
    fn reads_itself() {
        let mem = memory(Proc::Current).expect("own status");
        assert!(mem.rss_kib > 0);
        assert!(cpu_seconds(Proc::Current).expect("own stat") >= 0.0);
    }
}
