//! Background tasks that live exactly as long as their owner.

use tokio::task::JoinHandle;

/// Aborts its task when dropped, so a service's background work (relays, sweepers,
/// write-behind workers) stops with the value that started it.
#[derive(Debug)]
pub struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    /// Takes charge of `task`.
    pub fn new(task: JoinHandle<()>) -> Self {
        Self(task)
    }

    /// Whether the task has ended (finished, panicked or aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl From<JoinHandle<()>> for AbortOnDrop {
    fn from(task: JoinHandle<()>) -> Self {
        Self::new(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abort_on_drop_stops_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Holds the sender until aborted: the receiver sees it dropped only then.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        let guard = AbortOnDrop::new(task);
        assert!(!guard.is_finished());
        drop(guard);
        assert!(rx.await.is_err(), "the aborted task dropped its sender");
    }
}
