//! Progress bars on stderr (indicatif), so stdout carries only the result.
//!
//! indicatif draws nothing when stderr is not a terminal; `--no-progress`
//! hides the bars on a terminal too.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Makes the bars of one run.
#[derive(Clone, Copy, Debug)]
pub struct Bars {
    enabled: bool,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; fall back to the plain bar rather than fail.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

impl Bars {
    /// Bars that draw (on a terminal) or not.
    pub fn new(enabled: bool) -> Bars {
        Bars { enabled }
    }

    fn bar(&self, len: u64) -> ProgressBar {
        let target = if self.enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        ProgressBar::with_draw_target(Some(len), target)
    }

    /// A bar counting connections as they open.
    pub fn connections(&self, prefix: &str, len: u64) -> ProgressBar {
        let bar = self.bar(len);
        bar.set_style(style("{prefix:>10} [{bar:40}] {pos}/{len} {elapsed} {msg}"));
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    /// A bar counting seconds.
    pub fn seconds(&self, prefix: &str, secs: u64) -> ProgressBar {
        let bar = self.bar(secs);
        bar.set_style(style("{prefix:>10} [{bar:40}] {pos}/{len} s {msg}"));
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// Prints a line above the bars (or plainly when they are hidden).
    pub fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}
