//! Progress display: a bar per running task on a terminal, a log line per task every few
//! seconds elsewhere (cron, systemd, the daemon).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_core::progress::{NoProgress, Progress, Task, TaskSink};
use lifeboat_core::units::{human_bytes, human_duration};

const LOG_EVERY: Duration = Duration::from_secs(10);

/// The progress reporter that fits where stderr goes.
pub fn for_stderr(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars(MultiProgress::with_draw_target(
            ProgressDrawTarget::stderr_with_hz(4),
        )))
    } else {
        Arc::new(LogLines)
    }
}

/// One bar per task, stacked.
struct Bars(MultiProgress);

impl Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) -> Task {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        let bar = self.0.add(bar);
        bar.enable_steady_tick(Duration::from_millis(250));
        Task::new(BarTask {
            bar,
            label: label.to_string(),
        })
    }
}

struct BarTask {
    bar: ProgressBar,
    label: String,
}

impl TaskSink for BarTask {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn note(&self, detail: &str) {
        self.bar.set_message(format!("{}: {detail}", self.label));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A log line per task now and then.
struct LogLines;

impl Progress for LogLines {
    fn start(&self, label: &str, total: Option<u64>) -> Task {
        let now = Instant::now();
        Task::new(LogTask {
            label: label.to_string(),
            total,
            started: now,
            logged: Mutex::new(now),
            done: AtomicU64::new(0),
            detail: Mutex::new(String::new()),
        })
    }
}

struct LogTask {
    label: String,
    total: Option<u64>,
    started: Instant,
    logged: Mutex<Instant>,
    done: AtomicU64,
    detail: Mutex<String>,
}

impl TaskSink for LogTask {
    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut logged = self.logged.lock().expect("progress poisoned");
        if logged.elapsed() >= LOG_EVERY {
            *logged = Instant::now();
            let detail = self.detail.lock().expect("progress poisoned");
            tracing::info!(
                "{}",
                log_line(
                    &self.label,
                    done,
                    self.total,
                    self.started.elapsed().as_secs_f64(),
                    &detail
                )
            );
        }
    }

    fn note(&self, detail: &str) {
        detail.clone_into(&mut self.detail.lock().expect("progress poisoned"));
        self.advance(0);
    }
}

/// A progress line for a log: what is done, of how much, the rate and, with a total, the
/// share done and the time left (what the terminal's bar shows).
fn log_line(label: &str, done: u64, total: Option<u64>, secs: f64, detail: &str) -> String {
    let rate = done as f64 / secs.max(0.001);
    let mut line = match total.filter(|t| *t > 0) {
        Some(total) => {
            let left = total.saturating_sub(done);
            let eta = if rate > 0.0 {
                format!(", about {} left", human_duration(left as f64 / rate))
            } else {
                String::new()
            };
            format!(
                "{label}: {} of {} ({:.0}%), {}/s{eta}",
                human_bytes(done),
                human_bytes(total),
                (done as f64 * 100.0 / total as f64).min(100.0),
                human_bytes(rate as u64)
            )
        }
        None => format!(
            "{label}: {} done, {}/s",
            human_bytes(done),
            human_bytes(rate as u64)
        ),
    };
    if !detail.is_empty() {
        line.push_str(", ");
        line.push_str(detail);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_the_share_done_and_the_time_left() {
        assert_eq!(
            log_line("backup", 256 << 20, Some(1 << 30), 16.0, ""),
            "backup: 256.0 MiB of 1.0 GiB (25%), 16.0 MiB/s, about 48.0s left"
        );
        assert_eq!(
            log_line("restore", 3 << 20, None, 2.0, "table x"),
            "restore: 3.0 MiB done, 1.5 MiB/s, table x"
        );
        assert_eq!(
            log_line("copy", 0, Some(10), 1.0, ""),
            "copy: 0 B of 10 B (0%), 0 B/s"
        );
    }
}
