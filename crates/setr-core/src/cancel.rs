//! Cooperative cancellation: a request's work checks its token at every candidate or batch
//! boundary and stops once the request is cancelled or past its deadline, so that a
//! timed-out request frees its cores within one unit of work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Shared by a request and every piece of work done for it; clones see the same state.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
}

impl Cancel {
    /// A token that is never cancelled unless [`Cancel::cancel`] is called.
    pub fn never() -> Cancel {
        Cancel::default()
    }

    /// A token cancelled once `deadline` has passed.
    pub fn at(deadline: Instant) -> Cancel {
        Cancel {
            deadline: Some(deadline),
            cancelled: Arc::default(),
        }
    }

    /// Cancels now (every clone sees it).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// True once cancelled or past the deadline.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deadline_in_the_past_cancels_and_clones_share_a_cancel() {
        assert!(Cancel::at(Instant::now()).is_cancelled());
        let later = Cancel::at(Instant::now() + Duration::from_secs(3600));
        assert!(!later.is_cancelled());
        let clone = later.clone();
        later.cancel();
        assert!(clone.is_cancelled());
        assert!(!Cancel::never().is_cancelled());
    }
}
