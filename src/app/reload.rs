//! SIGHUP: the config file read again, validated as `check` does, and
//! swapped in whole for the requests that start after it, or, on any
//! problem, every problem logged and the running config kept.

use super::RunError;
use super::listeners::Running;
use super::live::Live;
use crate::admin::Admin;
use crate::config::{self, Config, StoreConfig};
use crate::metrics::{Metrics, ReloadResult};
use crate::proxy::{Proxy, SetupError};
use crate::record::now_ms;
use crate::session::Backend;
use crate::store;
use std::sync::Arc;

/// The handlers built from one config.
pub(super) struct Generation {
    pub config: Arc<Config>,
    pub proxy: Arc<Proxy>,
    pub admin: Arc<Admin>,
}

impl Generation {
    pub(super) fn build(
        config: Config,
        backend: Backend,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, SetupError> {
        let proxy = Arc::new(Proxy::new(&config, backend, metrics.clone())?);
        let admin = Arc::new(Admin::new(
            proxy.sessions.clone(),
            metrics.clone(),
            crate::admin::jwks(&config),
            config.admin.as_ref().and_then(|a| a.token.clone()),
        ));
        Ok(Generation {
            config: Arc::new(config),
            proxy,
            admin,
        })
    }
}

/// Why a reload kept the running config.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the config file has {} problem(s)", .0.issues.len())]
    Invalid(config::ConfigError),
    #[error(
        "session.store changed ({old} -> {new}); a store change takes effect at restart, so the running config stays"
    )]
    StoreChanged { old: &'static str, new: String },
    #[error("the session store could not be opened with the new config")]
    Store(#[source] store::OpenError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Listen(#[from] RunError),
}

/// What a reload works on: the running generation, the store that outlives
/// it, the metrics, and the handlers and loops it swaps.
pub(super) struct Reloader {
    pub current: Generation,
    pub backend: Backend,
    pub metrics: Arc<Metrics>,
    pub proxy: Arc<Live<Proxy>>,
    pub admin: Arc<Live<Admin>>,
}

impl Reloader {
    pub(super) async fn reload(&mut self, running: &mut Running) {
        let Some(path) = self.current.config.source.clone() else {
            tracing::info!(
                "SIGHUP: the config was not read from a file; re-reading TLS certificates only"
            );
            self.reload_certificates();
            return;
        };
        match self.apply(&path, running).await {
            Ok(()) => {
                self.metrics
                    .config_loaded(Some(ReloadResult::success), now_ms());
                let c = &self.current.config;
                tracing::info!(
                    path = %path.display(),
                    routes = c.routes.len(),
                    upstreams = c.upstreams.len(),
                    listeners = c.listen.len(),
                    "config reloaded: requests from now on use it"
                );
            }
            Err(refused) => {
                self.metrics
                    .config_loaded(Some(ReloadResult::error), now_ms());
                if let Refused::Invalid(e) = &refused {
                    for issue in &e.issues {
                        tracing::error!(setting = %issue.path, problem = %issue.message, "config not reloaded");
                    }
                }
                tracing::error!(
                    path = %path.display(),
                    error = %crate::logging::Chain(&refused),
                    "config not reloaded; the running config stays"
                );
                self.reload_certificates();
            }
        }
    }

    /// The running config's certificates, read again from their files (what
    /// SIGHUP does when there is no new config to take them from).
    fn reload_certificates(&self) {
        for store in self
            .current
            .config
            .listen
            .iter()
            .filter_map(|l| l.tls.as_ref())
        {
            match store.reload() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificates not reloaded; the previous ones stay in use")
                }
            }
        }
    }

    async fn apply(
        &mut self,
        path: &std::path::Path,
        running: &mut Running,
    ) -> Result<(), Refused> {
        let loaded = tokio::task::spawn_blocking({
            let path = path.to_path_buf();
            move || config::load(&path)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let new = loaded.map_err(Refused::Invalid)?;
        let old = &self.current.config;
        if new.session.store != old.session.store {
            return Err(Refused::StoreChanged {
                old: old.session.store.kind(),
                new: if new.session.store.kind() == old.session.store.kind() {
                    format!("another {}", new.session.store.kind())
                } else {
                    new.session.store.kind().to_string()
                },
            });
        }
        for (changed, setting) in [
            (
                new.limits.max_connections != old.limits.max_connections,
                "limits.max_connections",
            ),
            (new.log.format != old.log.format, "log.format"),
            (new.tracing != old.tracing, "tracing"),
        ] {
            if changed {
                tracing::warn!(
                    setting,
                    "changed in the config file; it takes effect at restart"
                );
            }
        }
        for warning in &new.warnings {
            tracing::warn!("{warning}");
        }
        // The cookie store holds nothing but the secrets and the cookie
        // name, which the new config may change; every other store stays open.
        let backend = match &new.session.store {
            StoreConfig::Cookie => self.backend.with_store(
                store::open(&new.session, &new.secrets)
                    .await
                    .map_err(Refused::Store)?,
            ),
            _ => self.backend.clone(),
        };
        let bound = running.bind_new(&new)?;
        let next = Generation::build(new, backend.clone(), &self.metrics)?;
        self.proxy.replace(next.proxy.clone());
        self.admin.replace(next.admin.clone());
        running.restart(&next.config, bound).await;
        self.backend = backend;
        self.current = next;
        Ok(())
    }
}
