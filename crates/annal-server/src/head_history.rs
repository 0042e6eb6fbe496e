//! The head, sampled by the server every [`EVERY`] for the last [`KEPT`] samples (five
//! minutes), so the console's events-per-second chart has the recent past as soon as
//! the overview opens (`GET /v1/overview`'s `head_history`).
//!
//! Invariants: one sampler per history, started on the first runtime that asks
//! ([`HeadHistory::start`]: the router when built inside one, otherwise the first
//! overview); it reads only the head (no writes, no lock the writer takes), keeps at
//! most [`KEPT`] samples, skips a sample the store fails to answer, and ends when the
//! server shuts down or the history is dropped.

use annal_core::wire::HeadSample;
use annal_core::{Store, Timestamp};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How often the head is read.
pub const EVERY: Duration = Duration::from_secs(2);
/// How many samples are kept.
pub const KEPT: usize = 150;

/// The recent heads.
#[derive(Default)]
pub struct HeadHistory {
    samples: Mutex<VecDeque<HeadSample>>,
    started: AtomicBool,
}

impl HeadHistory {
    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<HeadSample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    fn push(&self, sample: HeadSample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Starts sampling `store` on the current tokio runtime, unless a sampler runs
    /// already or there is no runtime here (a later call starts it then).
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let history: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                if let Ok(position) = store.head(&[]).await {
                    let Some(history) = history.upgrade() else {
                        return;
                    };
                    history.push(HeadSample {
                        at: Timestamp::now(),
                        position,
                    });
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_last_samples_oldest_first() {
        let h = HeadHistory::default();
        for position in 0..(KEPT as u64 + 10) {
            h.push(HeadSample {
                at: Timestamp::from_micros(position as i64),
                position,
            });
        }
        let samples = h.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].position, 10);
        assert_eq!(samples[KEPT - 1].position, KEPT as u64 + 9);
    }
}
