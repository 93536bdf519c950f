//! The HTTP trigger's live instances, so that shutdown can let them go and
//! wait until they are gone.
//!
//! wasmtime-wasi-http runs each instance in a spawned task that outlives the
//! request: a reused instance waits for more, a WASI 0.3 guest may work on
//! after answering. Left alone, those tasks are dropped with the runtime at
//! exit, mid-call for a guest still working, and the handler reports each
//! as a panicked worker. Instead, at shutdown the instances are told to
//! close (an idle one goes at once, a busy one when its guest is done or
//! its own deadline passes) and the trigger waits for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// How long shutdown waits for instances once every response is sent: more
/// than the 5 s a guest may work after its last response (the handler's
/// post-return deadline), after which its instance goes anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Counts the trigger's instances and tells them when to close. Clones
/// share the count.
#[derive(Clone)]
pub struct LiveInstances(Arc<Shared>);

struct Shared {
    /// How many instances exist now.
    count: watch::Sender<usize>,
    /// Turns `true` once the trigger shuts down.
    closing: watch::Sender<bool>,
    /// Set when shutdown stopped waiting: instances still alive then are
    /// dropped with the runtime, not released by their workers.
    abandoned: AtomicBool,
}

impl LiveInstances {
    /// No instances yet, and not closing.
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            count: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            abandoned: AtomicBool::new(false),
        }))
    }

    /// Counts one more instance until the returned guard is dropped.
    pub fn track(&self) -> Tracked {
        self.0.count.send_modify(|count| *count += 1);
        Tracked(self.clone())
    }

    /// Resolves once the trigger is shutting down (at once if it already is).
    pub fn closing(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut closing = self.0.closing.subscribe();
        async move {
            // An error means the trigger itself is gone: nothing to stay for.
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// Tells every instance to close, then waits until none is left or
    /// `grace` has passed; `false` if some were still running then.
    pub async fn close(&self, grace: Duration) -> bool {
        self.0.closing.send_replace(true);
        let mut count = self.0.count.subscribe();
        let drained = tokio::time::timeout(grace, count.wait_for(|count| *count == 0))
            .await
            .is_ok();
        if !drained {
            self.0.abandoned.store(true, Ordering::Relaxed);
        }
        drained
    }

    /// Whether shutdown gave up waiting for the instances still alive.
    pub fn abandoned(&self) -> bool {
        self.0.abandoned.load(Ordering::Relaxed)
    }

    /// How many instances exist now.
    pub fn count(&self) -> usize {
        *self.0.count.borrow()
    }
}

impl Default for LiveInstances {
    fn default() -> Self {
        Self::new()
    }
}

/// One instance, counted by [`LiveInstances`] while this lives.
pub struct Tracked(LiveInstances);

impl Tracked {
    /// The instances this one is counted among.
    pub fn live(&self) -> &LiveInstances {
        &self.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.0.count.send_modify(|count| *count -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_returns_at_once_when_no_instance_is_alive() {
        let live = LiveInstances::new();
        drop(live.track());
        assert!(live.close(Duration::from_secs(5)).await);
        assert!(!live.abandoned());
    }

    #[tokio::test]
    async fn close_waits_until_the_last_instance_is_released() {
        let live = LiveInstances::new();
        let instance = live.track();
        let closing = live.closing();
        let release = tokio::spawn(async move {
            // The instance goes when it is told to close, as a worker does.
            closing.await;
            drop(instance);
        });
        assert!(live.close(Duration::from_secs(5)).await);
        assert_eq!(live.count(), 0);
        release.await.expect("the releasing task");
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_after_the_grace_and_says_so() {
        let live = LiveInstances::new();
        let _stuck = live.track();
        assert!(!live.close(Duration::from_secs(5)).await);
        assert!(live.abandoned());
        assert_eq!(live.count(), 1);
    }

    #[tokio::test]
    async fn an_instance_started_after_shutdown_began_is_told_to_close_at_once() {
        let live = LiveInstances::new();
        assert!(live.close(Duration::from_secs(5)).await);
        tokio::time::timeout(Duration::from_secs(5), live.closing())
            .await
            .expect("closing resolves for a late instance");
    }
}
