//! The server's drain, for calls that would otherwise outlive it: a long-lived stream (a
//! `ReserveStream` a mobile backend keeps open for a whole sale) holds its connection until the
//! drain timeout unless its handler ends it. [`GrpcServer`](crate::server::GrpcServer) starts
//! the drain once it stops accepting calls (after its shutdown delay); handlers that hold a
//! clone wait for it with [`Draining::started`] and end their streams.

use std::sync::Arc;

use tokio::sync::watch;

/// Whether the server is draining; clones share one state.
#[derive(Debug, Clone)]
pub struct Draining {
    state: Arc<watch::Sender<bool>>,
}

impl Default for Draining {
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Draining {
    /// Starts the drain (once; later calls change nothing).
    pub fn start(&self) {
        self.state.send_replace(true);
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.state.borrow()
    }

    /// Resolves once the drain has started (at once if it has).
    pub fn started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut state = self.state.subscribe();
        async move {
            // The sender lives in `self.state` as long as any clone does; if every clone is
            // gone nobody can start the drain, and waiting forever is right.
            if state.wait_for(|draining| *draining).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_drain_start_once() {
        let draining = Draining::default();
        let waiter = tokio::spawn(draining.clone().started());
        assert!(!draining.is_draining());
        let clone = draining.clone();
        clone.start();
        clone.start();
        waiter.await.expect("the waiter wakes");
        assert!(draining.is_draining(), "a clone's start is everyone's");
        // Started already: resolves at once.
        draining.started().await;
    }
}
