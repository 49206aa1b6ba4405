//! Listens for the server's shutdown signal (mini-redis's `Shutdown`): the listener drops
//! the broadcast sender, and every receiver wakes.

use tokio::sync::broadcast;

#[derive(Debug)]
pub(crate) struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new(notify: broadcast::Receiver<()>) -> Self {
        Self { is_shutdown: false, notify }
    }

    /// Waits for the shutdown signal; returns at once if it was already received.
    /// Cancel-safe.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
