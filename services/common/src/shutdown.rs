//! Shutdown signalling: one trigger, any number of listeners (the mini-redis shape, on a
//! `watch` channel so a listener created after the trigger still sees it).

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // The sender lives in `self`, so `wait_for` cannot fail while we hold it.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Triggers on SIGTERM or Ctrl-C; returns when triggered by any means.
    pub async fn trigger_on_signals(&self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("interrupt received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
            _ = self.wait() => return,
        }
        self.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_listener_sees_trigger() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        s.trigger();
        let late = s.clone();
        tokio::time::timeout(std::time::Duration::from_secs(1), late.wait())
            .await
            .unwrap();
        assert!(late.is_triggered());
    }
}
