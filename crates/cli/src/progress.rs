//! Progress display: a bar on a terminal, a log line every few seconds elsewhere.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_core::postgres::dump::human_bytes;
use lifeboat_core::progress::{NoProgress, Progress};

const LOG_EVERY: Duration = Duration::from_secs(10);

/// The progress reporter that fits where stderr goes.
pub fn for_stderr(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bar::default())
    } else {
        Arc::new(LogLines::default())
    }
}

#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    task: Mutex<String>,
}

impl Progress for Bar {
    fn begin(&self, task: &str, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
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
        bar.set_message(task.to_string());
        *self.task.lock().expect("progress poisoned") = task.to_string();
        bar.enable_steady_tick(Duration::from_millis(250));
        *self.bar.lock().expect("progress poisoned") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar.lock().expect("progress poisoned").as_ref() {
            bar.inc(bytes);
        }
    }

    fn note(&self, detail: &str) {
        if let Some(bar) = self.bar.lock().expect("progress poisoned").as_ref() {
            let task = self.task.lock().expect("progress poisoned");
            bar.set_message(format!("{task}: {detail}"));
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().expect("progress poisoned").take() {
            bar.finish_and_clear();
        }
    }
}

struct LogLines {
    task: Mutex<(String, Instant, Instant)>,
    done: AtomicU64,
    detail: Mutex<String>,
}

impl Default for LogLines {
    fn default() -> Self {
        LogLines {
            task: Mutex::new((String::new(), Instant::now(), Instant::now())),
            done: AtomicU64::new(0),
            detail: Mutex::new(String::new()),
        }
    }
}

impl Progress for LogLines {
    fn begin(&self, task: &str, _total: Option<u64>) {
        *self.task.lock().expect("progress poisoned") =
            (task.to_string(), Instant::now(), Instant::now());
        self.done.store(0, Ordering::Relaxed);
        self.detail.lock().expect("progress poisoned").clear();
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut task = self.task.lock().expect("progress poisoned");
        if task.2.elapsed() >= LOG_EVERY {
            task.2 = Instant::now();
            let secs = task.1.elapsed().as_secs_f64().max(0.001);
            let detail = self.detail.lock().expect("progress poisoned");
            tracing::info!(
                "{}: {} done, {}/s{}{}",
                task.0,
                human_bytes(done),
                human_bytes((done as f64 / secs) as u64),
                if detail.is_empty() { "" } else { ", " },
                detail
            );
        }
    }

    fn note(&self, detail: &str) {
        detail.clone_into(&mut self.detail.lock().expect("progress poisoned"));
        self.advance(0);
    }

    fn end(&self) {}
}
