//! Showing events as they happen: a progress bar on a terminal (steps done of total, steps
//! running, elapsed time) with log lines above it, or plain `[step] line` text otherwise.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use stella_engine::event::{Event, EventSink};

/// An event sink that prints.
pub struct Display {
    bar: Option<ProgressBar>,
    running: Mutex<BTreeSet<String>>,
}

impl Display {
    /// A progress display when stderr is a terminal, plain lines otherwise.
    pub fn new(total_steps: usize) -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_steps as u64);
            let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} steps done, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Display {
            bar,
            running: Mutex::new(BTreeSet::new()),
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    /// Clears the progress bar before the final summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn secs(e: &Event) -> String {
    e.get("durationMs")
        .and_then(serde_json::Value::as_u64)
        .map_or(String::new(), |ms| format!(" in {:.1}s", ms as f64 / 1000.0))
}

impl EventSink for Display {
    fn accept(&self, e: &Event) -> std::io::Result<()> {
        let step = e.step.as_deref().unwrap_or("");
        let msg = e.msg.as_deref().unwrap_or("");
        let code = e
            .get("code")
            .and_then(serde_json::Value::as_str)
            .map_or(String::new(), |c| format!(" [{c}]"));
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = false;
        let text = match e.kind.as_str() {
            "run.started" => Some(format!(
                "run {} started: {} {}",
                e.get("runId").and_then(|v| v.as_str()).unwrap_or(""),
                e.get("pack").and_then(|v| v.as_str()).unwrap_or(""),
                e.get("planHash").and_then(|v| v.as_str()).unwrap_or("")
            )),
            "run.resumed" => Some(format!("run resumed: {msg}")),
            "step.started" => {
                running.insert(step.to_string());
                let attempt = e.get("attempt").and_then(serde_json::Value::as_u64).unwrap_or(1);
                (attempt > 1).then(|| format!("[{step}] attempt {attempt}"))
            }
            "step.log" => Some(format!("[{step}] {msg}")),
            "step.succeeded" => {
                running.remove(step);
                done = true;
                Some(format!("[{step}] succeeded{}", secs(e)))
            }
            "step.failed" => {
                running.remove(step);
                done = true;
                Some(format!("[{step}] failed: {msg}{code}"))
            }
            "step.retrying" => Some(format!("[{step}] {msg}; retrying{code}")),
            "step.skipped" => {
                done = true;
                Some(format!("[{step}] skipped: {msg}"))
            }
            "step.reused" => {
                done = true;
                Some(format!("[{step}] {msg}"))
            }
            "step.cancelled" => {
                running.remove(step);
                done = true;
                Some(format!("[{step}] cancelled: {msg}"))
            }
            "gate.waiting" => Some(format!("[{step}] waiting: {msg}")),
            "gate.approved" => Some(format!("[{step}] approved")),
            "run.succeeded" => Some(format!("run succeeded{}", secs(e))),
            "run.failed" => Some(format!("run failed{}: {msg}{code}", secs(e))),
            "run.cancelled" => Some(format!("run cancelled{}", secs(e))),
            _ => None,
        };
        if let Some(bar) = &self.bar {
            if done {
                bar.inc(1);
            }
            let names: Vec<&str> = running.iter().map(String::as_str).take(3).collect();
            bar.set_message(format!("{} running {}", running.len(), names.join(" ")));
        }
        drop(running);
        if let Some(t) = text {
            self.line(t);
        }
        Ok(())
    }
}

/// A recorded event as `stella runs logs` shows it (and the HTTP logs route serves it): a
/// step's line as `[step] line`, a run's milestones as `-- run.x: message`; `None` for the rest.
pub fn log_line(e: &Event) -> Option<String> {
    match e.kind.as_str() {
        "step.log" => Some(format!(
            "[{}] {}",
            e.step.as_deref().unwrap_or(""),
            e.msg.as_deref().unwrap_or("")
        )),
        k if k.starts_with("run.") || k == "gate.waiting" || k == "step.failed" => Some(format!(
            "-- {k}{}",
            e.msg.as_deref().map_or(String::new(), |m| format!(": {m}"))
        )),
        _ => None,
    }
}
