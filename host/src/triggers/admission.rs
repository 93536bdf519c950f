//! Admission control for one component: at most `max_concurrency` calls run
//! at once, a bounded number wait (each for a bounded time), and the rest are
//! turned away at once, so an overloaded component answers `503` with
//! `Retry-After` instead of queueing without limit or exhausting instances.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Callers that may wait per running slot before new ones are turned away.
const WAITING_PER_SLOT: usize = 4;

/// How long a caller waits for a slot before it is turned away.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Why a call was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The waiting line was full.
    QueueFull,
    /// No slot freed up within [`MAX_WAIT`].
    TimedOut,
}

/// The running slots and the waiting line of one component.
pub struct Admission {
    running: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_running: usize,
}

impl Admission {
    /// Admits `max_concurrency` calls at once.
    pub fn new(max_concurrency: usize) -> Self {
        Self {
            running: Semaphore::new(max_concurrency),
            waiting: AtomicUsize::new(0),
            max_waiting: max_concurrency * WAITING_PER_SLOT,
            max_running: max_concurrency,
        }
    }

    /// Calls running now.
    pub fn running(&self) -> usize {
        self.max_running - self.running.available_permits()
    }

    /// Calls waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Waits for a slot; the call runs while the permit lives.
    pub async fn admit(&self) -> Result<SemaphorePermit<'_>, Rejected> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::QueueFull);
        }
        let waited = tokio::time::timeout(MAX_WAIT, self.running.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a closed one admits nobody.
            Ok(Err(_)) | Err(_) => Err(Rejected::TimedOut),
        }
    }
}

impl Admission {
    /// Waits for a slot in line with every other caller (first come, first
    /// served), however long the line and the wait: for callers bounded
    /// elsewhere, such as a NATS trigger's in-flight messages, which must
    /// neither be turned away nor starve behind HTTP calls.
    pub async fn admit_patiently(&self) -> SemaphorePermit<'_> {
        if let Ok(permit) = self.running.try_acquire() {
            return permit;
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed.
        permit.expect("the admission semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_beyond_the_limit_wait_and_beyond_the_line_are_turned_away() {
        let admission = Admission::new(1);
        let running = admission.admit().await.expect("the first call runs");
        let mut waiting = Vec::new();
        for _ in 0..WAITING_PER_SLOT {
            waiting.push(Box::pin(admission.admit()));
        }
        for call in &mut waiting {
            // Poll once so each takes its place in the line.
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        assert_eq!(admission.admit().await.err(), Some(Rejected::QueueFull));
        drop(running);
        assert!(
            waiting.remove(0).await.is_ok(),
            "the first in line runs next"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_patient_caller_waits_past_the_deadline_and_a_full_line() {
        let admission = Admission::new(1);
        let running = admission.admit().await.expect("the first call runs");
        let mut patient = Box::pin(admission.admit_patiently());
        assert!(futures::poll!(patient.as_mut()).is_pending());
        tokio::time::sleep(MAX_WAIT * 2).await;
        drop(running);
        let _admitted = patient.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_waits_at_most_the_deadline() {
        let admission = Admission::new(1);
        let _running = admission.admit().await.expect("the first call runs");
        assert_eq!(admission.admit().await.err(), Some(Rejected::TimedOut));
    }
}
