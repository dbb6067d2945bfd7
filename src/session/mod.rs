//! Sessions at the gateway: loading the session a request names, and applying
//! what the upstream's response asks (merge patches and actions) to the store
//! and the cookie.

pub mod cookie;
pub mod writeback;

use crate::config::OnStoreError;
use crate::error::ProxyError;
use crate::metrics::{Metrics, SessionEvent, StoreOp};
use crate::record::{
    Applied, Change, Policy, SessionData, SessionId, SessionRecord, UnixMillis, apply,
};
use crate::store::cookie::CookieStore;
use crate::store::{Backend, SaveOp, SaveOutcome, SessionStore, Store, StoreError};
use cookie::{CookieCodec, RequestCookies};
use http::HeaderValue;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use writeback::Writeback;

/// The session a request arrived with.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The id, on a server-side store.
    pub id: Option<SessionId>,
    pub record: Option<Arc<SessionRecord>>,
    /// The store failed under `fail_open`: the request goes on with no session and nothing is written.
    pub degraded: bool,
    /// The numbered chunk cookies the request carried (cookie store).
    pub chunks: Vec<usize>,
}

impl Loaded {
    /// The session's data; empty without a session.
    pub fn data(&self) -> &SessionData {
        match &self.record {
            Some(r) => &r.data,
            None => SessionData::empty(),
        }
    }
}

pub struct Sessions {
    pub backend: Backend,
    pub codec: CookieCodec,
    pub policy: Policy,
    pub on_store_error: OnStoreError,
    pub save_every_request: bool,
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub fn new(
        backend: Backend,
        codec: CookieCodec,
        policy: Policy,
        on_store_error: OnStoreError,
        save_every_request: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Sessions {
            backend,
            codec,
            policy,
            on_store_error,
            save_every_request,
            metrics,
        }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = fut.await;
        self.metrics.store_op(op, start.elapsed(), result.is_ok());
        result
    }

    /// Finds the session the request's cookies name. Cookies that are
    /// malformed, forged, or name no live session are no session.
    pub async fn load(
        &self,
        cookies: &RequestCookies<'_>,
        now: UnixMillis,
    ) -> Result<Loaded, ProxyError> {
        let store = match &self.backend {
            Backend::Server(store) => store,
            Backend::Sealed(sealed) => {
                // At most two candidates: a request cannot make us decrypt at will.
                let record = cookies
                    .session_values
                    .iter()
                    .take(2)
                    .filter_map(|v| CookieStore::join(v, &cookies.chunks))
                    .find_map(|joined| sealed.open(&joined, now));
                return Ok(Loaded {
                    id: None,
                    record: record.map(Arc::new),
                    degraded: false,
                    chunks: cookies.chunks.iter().map(|(n, _)| *n).collect(),
                });
            }
        };
        for value in &cookies.session_values {
            let Some((id, mac)) = CookieCodec::parse(value) else {
                continue;
            };
            // In a large store the lookup misses the cache: its first miss
            // is taken while the MAC is checked (about 0.15 us) instead of
            // after. A forged id costs a prefetch, never a lookup.
            store.prefetch(&id);
            if !self.codec.verify(&id, &mac) {
                continue;
            }
            match self.timed(StoreOp::load, store.load(&id, now)).await {
                Ok(Some(record)) => {
                    return Ok(Loaded {
                        id: Some(id),
                        record: Some(record),
                        ..Loaded::default()
                    });
                }
                Ok(None) => continue,
                Err(e) => match self.on_store_error {
                    OnStoreError::FailClosed => return Err(ProxyError::StoreRead(e)),
                    OnStoreError::FailOpen => {
                        tracing::warn!(error = %e, "session store unavailable; forwarding with an empty session (fail_open)");
                        return Ok(Loaded {
                            degraded: true,
                            ..Loaded::default()
                        });
                    }
                },
            }
        }
        Ok(Loaded::default())
    }

    /// A write that failed after the upstream answered: 502 under
    /// `fail_closed`; under `fail_open` the write is dropped and the response passes.
    fn write_failed(&self, e: StoreError) -> Result<(), ProxyError> {
        self.metrics.event(SessionEvent::store_write_failed);
        match self.on_store_error {
            OnStoreError::FailClosed => Err(ProxyError::StoreWrite(e)),
            OnStoreError::FailOpen => {
                self.metrics.event(SessionEvent::dropped);
                tracing::warn!(error = %e, "session write dropped: store unavailable (fail_open)");
                Ok(())
            }
        }
    }

    fn refused(&self, e: crate::record::UpdateError) -> ProxyError {
        self.metrics.event(SessionEvent::refused);
        ProxyError::UpdateRefused(e)
    }

    fn cookie_for(&self, id: &SessionId, record: &SessionRecord, now: UnixMillis) -> HeaderValue {
        self.codec
            .set_cookie(&self.codec.encode(id), record, &self.policy, now)
    }

    /// Applies an upstream's write-back; returns the `Set-Cookie` headers to send.
    pub async fn write_back(
        &self,
        loaded: &Loaded,
        wb: &Writeback,
        now: UnixMillis,
    ) -> Result<Vec<HeaderValue>, ProxyError> {
        match &self.backend {
            Backend::Server(store) => Ok(self
                .write_back_server(store, loaded, wb, now)
                .await?
                .into_iter()
                .collect()),
            Backend::Sealed(sealed) => self.write_back_sealed(sealed, loaded, wb, now),
        }
    }

    async fn write_back_server(
        &self,
        store: &Store,
        loaded: &Loaded,
        wb: &Writeback,
        now: UnixMillis,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        if loaded.degraded {
            if !wb.is_empty() {
                self.metrics.event(SessionEvent::dropped);
                tracing::warn!("session write dropped: the session could not be read (fail_open)");
            }
            return Ok(None);
        }
        let change = Change {
            patches: &wb.patches,
            expiry_s: wb.expiry,
        };
        let mut set_cookie = None;
        if wb.flush {
            // A session that replaces the flushed one is checked first, so a
            // refused update leaves the old session untouched.
            let replacement = self.new_session(&change, now)?;
            if let Some(id) = &loaded.id {
                match self.timed(StoreOp::delete, store.delete(id)).await {
                    Ok(true) => {
                        self.metrics.event(SessionEvent::flushed);
                        set_cookie = Some(self.codec.removal());
                    }
                    Ok(false) => {
                        // Already flushed, cycled by a concurrent login, or expired:
                        // the cookie the browser holds by now is left alone.
                        self.metrics.event(SessionEvent::dropped);
                        tracing::info!(
                            "session flush dropped: the session ended while the request was in flight"
                        );
                        return Ok(None);
                    }
                    Err(e) => {
                        self.write_failed(e)?;
                        return Ok(None);
                    }
                }
            }
            if let Some((id, record)) = replacement {
                return self.create(store, id, record, now, set_cookie).await;
            }
            return Ok(set_cookie);
        }
        let Some(id) = &loaded.id else {
            return match self.new_session(&change, now)? {
                Some((id, record)) => self.create(store, id, record, now, set_cookie).await,
                None => Ok(None),
            };
        };
        let asked = !wb.patches.is_empty() || wb.expiry.is_some() || wb.cycle;
        if !asked && !self.save_every_request {
            return Ok(None);
        }
        let cycle_to = wb.cycle.then(|| {
            let new_id = SessionId::generate();
            let sid = self.codec.sid(&new_id);
            (new_id, sid)
        });
        let op = SaveOp {
            change,
            cycle_to,
            now_ms: now,
        };
        match self.timed(StoreOp::save, store.save(id, &op)).await {
            Ok(SaveOutcome::Saved { id, record }) => {
                if wb.cycle {
                    self.metrics.event(SessionEvent::cycled);
                }
                set_cookie = Some(self.cookie_for(&id, &record, now));
            }
            Ok(SaveOutcome::Emptied) => {
                self.metrics.event(SessionEvent::flushed);
                set_cookie = Some(self.codec.removal());
            }
            Ok(SaveOutcome::Gone) => {
                // Flushed, cycled or expired while this request was in flight:
                // writing now would undo a logout or a login.
                self.metrics.event(SessionEvent::dropped);
                tracing::info!(
                    "session write dropped: the session ended while the request was in flight"
                );
            }
            Ok(SaveOutcome::Refused(e)) => return Err(self.refused(e)),
            Err(e) => self.write_failed(e)?,
        }
        Ok(set_cookie)
    }

    /// The cookie store: the new state is computed here and sent back as
    /// cookies; concurrent writes are last-writer-wins by nature.
    fn write_back_sealed(
        &self,
        sealed: &CookieStore,
        loaded: &Loaded,
        wb: &Writeback,
        now: UnixMillis,
    ) -> Result<Vec<HeaderValue>, ProxyError> {
        let change = Change {
            patches: &wb.patches,
            expiry_s: wb.expiry,
        };
        let current = if wb.flush {
            None
        } else {
            loaded.record.as_deref()
        };
        let next = match current {
            None => self.new_session(&change, now)?.map(|(_, r)| r),
            Some(_) if wb.is_empty() && !self.save_every_request => return Ok(Vec::new()),
            Some(record) => match apply(record.clone(), &change, &self.policy, now) {
                Ok(Applied::Saved(mut r)) => {
                    if wb.cycle {
                        r.sid = self.codec.sid(&SessionId::generate());
                    }
                    Some(r)
                }
                Ok(Applied::Emptied) => None,
                Err(e) => return Err(self.refused(e)),
            },
        };
        let chunks = match &next {
            Some(r) => sealed.split(&sealed.seal(r)).map_err(|e| {
                self.refused(crate::record::UpdateError::TooLarge {
                    size: e.needed,
                    max: e.available,
                })
            })?,
            None if loaded.record.is_none() => return Ok(Vec::new()),
            None => Vec::new(),
        };
        let mut cookies = Vec::with_capacity(chunks.len() + loaded.chunks.len() + 1);
        if let Some(r) = &next {
            for (i, value) in chunks.iter().enumerate() {
                cookies.push(self.codec.set_cookie_named(
                    &sealed.chunk_name(i),
                    value,
                    r,
                    &self.policy,
                    now,
                ));
            }
        } else {
            cookies.push(self.codec.removal());
        }
        // Chunks the browser holds beyond the new value's are expired.
        for n in &loaded.chunks {
            if *n >= chunks.len().max(1) {
                cookies.push(self.codec.removal_named(&sealed.chunk_name(*n)));
            }
        }
        if wb.flush && loaded.record.is_some() {
            self.metrics.event(SessionEvent::flushed);
        }
        match (current, &next) {
            (None, Some(_)) => self.metrics.event(SessionEvent::created),
            (Some(_), Some(_)) if wb.cycle => self.metrics.event(SessionEvent::cycled),
            (Some(_), None) => self.metrics.event(SessionEvent::flushed),
            _ => {}
        }
        Ok(cookies)
    }

    /// The session an upstream's write creates, if the data comes out non-empty.
    fn new_session(
        &self,
        change: &Change<'_>,
        now: UnixMillis,
    ) -> Result<Option<(SessionId, SessionRecord)>, ProxyError> {
        if change.patches.is_empty() {
            return Ok(None);
        }
        let id = SessionId::generate();
        let fresh = SessionRecord::new(self.codec.sid(&id), now);
        match apply(fresh, change, &self.policy, now) {
            Ok(Applied::Saved(record)) => Ok(Some((id, record))),
            Ok(Applied::Emptied) => Ok(None),
            Err(e) => Err(self.refused(e)),
        }
    }

    async fn create(
        &self,
        store: &Store,
        id: SessionId,
        record: SessionRecord,
        now: UnixMillis,
        otherwise: Option<HeaderValue>,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        match self
            .timed(StoreOp::create, store.create(&id, &record))
            .await
        {
            Ok(()) => {
                self.metrics.event(SessionEvent::created);
                Ok(Some(self.cookie_for(&id, &record, now)))
            }
            Err(e) => {
                self.write_failed(e)?;
                Ok(otherwise)
            }
        }
    }

    /// Deletes expired sessions; counted as `expired` events.
    pub async fn sweep(&self, now: UnixMillis) -> Result<u64, StoreError> {
        let Backend::Server(store) = &self.backend else {
            return Ok(0);
        };
        let n = self
            .timed(StoreOp::clear_expired, store.clear_expired(now))
            .await?;
        self.metrics.event_n(SessionEvent::expired, n);
        Ok(n)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Server(store) => self.timed(StoreOp::ping, store.ping()).await,
            Backend::Sealed(_) => Ok(()),
        }
    }
}
