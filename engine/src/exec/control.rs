//! Cancellation, deadlines and the global limit on running steps: the small shared controls
//! the executor's threads coordinate with. No I/O here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Why work must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    TimedOut,
}

/// A cancellation flag with an optional deadline. Child tokens (for a group or a step) see
/// their parents' flags and the earliest deadline.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    flags: Vec<Arc<AtomicBool>>,
    deadline: Option<Instant>,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken {
            flags: vec![Arc::new(AtomicBool::new(false))],
            deadline: None,
        }
    }

    /// A token that stops when this one does, or when `cancel` is called on it, or at `deadline`.
    pub fn child(&self, deadline: Option<Instant>) -> CancelToken {
        let mut flags = self.flags.clone();
        flags.push(Arc::new(AtomicBool::new(false)));
        let deadline = match (self.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        CancelToken { flags, deadline }
    }

    /// Cancels this token and its children (not its parents).
    pub fn cancel(&self) {
        if let Some(own) = self.flags.last() {
            own.store(true, Ordering::SeqCst);
        }
    }

    pub fn stop(&self) -> Option<Stop> {
        if self.flags.iter().any(|f| f.load(Ordering::SeqCst)) {
            Some(Stop::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stop::TimedOut)
        } else {
            None
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sleeps up to `dur`, waking early when stopped. Returns the stop reason, if any.
    pub fn sleep(&self, dur: std::time::Duration) -> Option<Stop> {
        let end = Instant::now() + dur;
        loop {
            if let Some(s) = self.stop() {
                return Some(s);
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            std::thread::sleep((end - now).min(std::time::Duration::from_millis(20)));
        }
    }
}

/// A counting semaphore: at most `max` steps run processes at once.
pub struct Limiter {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Limiter {
    pub fn new(max: usize) -> Limiter {
        Limiter {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits for a slot; `None` when `token` stops first.
    pub fn acquire<'a>(&'a self, token: &CancelToken) -> Option<Permit<'a>> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if token.stop().is_some() {
                return None;
            }
            if *used < self.max {
                *used += 1;
                return Some(Permit { limiter: self });
            }
            used = self
                .freed
                .wait_timeout(used, std::time::Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A held slot, released on drop.
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.limiter.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= 1;
        self.limiter.freed.notify_one();
    }
}
