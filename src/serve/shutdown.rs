//! The shutdown trigger: SIGTERM or SIGINT flips a watch channel that every
//! long-running task holds a [`Shutdown`] for.

use tokio::sync::watch;

/// A handle that says whether shutdown was requested and can wait for it.
#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

/// The side that requests shutdown.
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, requested) = watch::channel(false);
        (ShutdownTrigger { sender }, Shutdown { requested })
    }

    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolve once shutdown is requested (at once if it already was).
    pub async fn requested(&mut self) {
        // An error means the trigger is gone, which also means "stop".
        let _ = self.requested.wait_for(|requested| *requested).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

/// Wait for SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => Ok("SIGTERM"),
            _ = interrupt.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
