//! The process's signals: SIGINT and SIGTERM shut it down, SIGHUP reloads.

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed at
/// once (before the store opens), and a second signal exits immediately
/// instead of waiting out the drain.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!(
                    "sessiongate: second signal, exiting without waiting for in-flight requests"
                );
                std::process::exit(1);
            });
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The SIGHUP handler, installed before anything slow so that a reload
/// signal never terminates the process (its default action).
#[cfg(unix)]
pub type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub type Hangup = ();

/// The next SIGHUP; never, without a handler.
pub async fn hangup(hup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(hup) = hup
        && hup.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = hup;
    std::future::pending::<()>().await
}

pub fn install_sighup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot install a SIGHUP handler"))
            .ok()
    }
}
