//! What the encoder thread and the scan thread share: a bounded queue whose overflow is an
//! immediate "overloaded", and gathering a batch behind its first job.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::EngineError;

/// Queues `job` for the thread `what` names; a full queue is overloaded at once.
pub(crate) fn enqueue<J>(sender: &SyncSender<J>, job: J, what: &str) -> Result<(), EngineError> {
    match sender.try_send(job) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => {
            Err(EngineError::Overloaded(format!("the {what} queue is full")))
        }
        Err(TrySendError::Disconnected(_)) => Err(EngineError::Unavailable(format!(
            "the {what} thread stopped"
        ))),
    }
}

/// `first` and the jobs that join it: up to `max_batch`, waiting at most `max_wait` for
/// company (zero: only what is already queued).
pub(crate) fn gather<J>(
    receiver: &Receiver<J>,
    first: J,
    max_batch: usize,
    max_wait: Duration,
) -> Vec<J> {
    let mut jobs = vec![first];
    let deadline = Instant::now() + max_wait;
    while jobs.len() < max_batch {
        let next = if max_wait.is_zero() {
            receiver.try_recv().ok()
        } else {
            receiver
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        };
        match next {
            Some(job) => jobs.push(job),
            None => break,
        }
    }
    jobs
}
