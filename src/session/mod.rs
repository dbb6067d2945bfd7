//! Sessions at the gateway: loading the session a request names, and applying
//! what the upstream's response asks (merge patches and actions) to the store
//! and the cookie.

mod backend;
pub mod cookie;
pub mod csrf;
mod manage;
pub mod writeback;

pub use backend::Backend;
pub use manage::{ManageError, Subjects};
pub use writeback::{After, Written};

use crate::config::{InternalHeaders, OnStoreError};
use crate::future::Detached;
use crate::metrics::{Metrics, SessionEvent, StoreOp};
use crate::record::{
    Applied, Change, IndexEntry, Policy, SessionData, SessionId, SessionRecord, UnixMillis, apply,
    patched, subject_of,
};
use crate::store::{
    Carries, Created, Expect, SaveOp, SaveOutcome, SessionStore, Store, StoreError, Ticket,
};
use cookie::{CookieCodec, CookieMac, RequestCookies};
use http::HeaderValue;
use std::borrow::Cow;
use std::sync::Arc;
use writeback::Writeback;

/// What can go wrong in the session layer; the proxy maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session store unavailable")]
    StoreRead(#[source] StoreError),
    #[error("session could not be saved")]
    StoreWrite(#[source] StoreError),
    #[error("upstream's session update refused")]
    UpdateRefused(#[source] crate::record::UpdateError),
    #[error("upstream asked for revoke-others")]
    NotManaged(#[source] ManageError),
}

/// The session a request arrived with.
#[derive(Debug, Default)]
pub struct Loaded {
    /// What the client holds for it.
    pub ticket: Option<Ticket>,
    pub record: Option<Arc<SessionRecord>>,
    /// The store failed under `fail_open`: the request goes on with no session and nothing is written.
    pub degraded: bool,
    /// The numbered chunk cookies the request carried (cookie store).
    pub chunks: Vec<usize>,
    /// The MAC of the id cookie, when it verified under the signing secret.
    pub signed: Option<CookieMac>,
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
    /// The internal headers an upstream writes back with.
    headers: InternalHeaders,
    pub codec: CookieCodec,
    pub policy: Policy,
    pub on_store_error: OnStoreError,
    pub save_every_request: bool,
    metrics: Arc<Metrics>,
    /// Whose sessions are whose, and how many one may have.
    subjects: Subjects,
}

impl Sessions {
    pub fn new(
        backend: Backend,
        headers: InternalHeaders,
        codec: CookieCodec,
        policy: Policy,
        on_store_error: OnStoreError,
        save_every_request: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Sessions {
            backend,
            headers,
            codec,
            policy,
            on_store_error,
            save_every_request,
            metrics,
            subjects: Subjects::default(),
        }
    }

    /// `session.subject_key` and `session.max_per_subject`.
    pub fn with_subjects(mut self, key: Option<String>, max_per_subject: Option<usize>) -> Self {
        self.subjects = Subjects {
            key,
            max_per_subject,
        };
        self
    }

    /// The tickets a request's cookies hold, best first: signed ids (each
    /// checked, and a prefetch of its session started first), or the sealed
    /// session in its numbered cookies (at most two candidates: a request
    /// cannot make the gateway decrypt at will).
    /// With each id, its MAC if the signing secret made it.
    fn tickets(&self, cookies: &RequestCookies<'_>) -> Vec<(Ticket, Option<CookieMac>)> {
        match self.backend.store.carries() {
            Carries::Id => cookies
                .session_values
                .iter()
                .filter_map(|value| {
                    let (id, mac) = CookieCodec::parse(value)?;
                    // In a large store the lookup misses the cache: its first
                    // miss is taken while the MAC is checked (about 0.15 us)
                    // instead of after. A forged id costs a prefetch, never a lookup.
                    self.backend.store.prefetch(&id);
                    let secret = self.codec.verifying_secret(&id, &mac)?;
                    Some((Ticket::Id(id), (secret == 0).then_some(mac)))
                })
                .collect(),
            Carries::Session => cookies
                .session_values
                .iter()
                .take(2)
                .map(|main| {
                    let last = cookies.chunks.iter().map(|(n, _)| *n).max().unwrap_or(0);
                    let mut values = vec![main.to_string()];
                    for n in 1..=last.min(crate::store::cookie::MAX_CHUNKS) {
                        let chunk = cookies.chunks.iter().find(|(i, _)| *i == n);
                        values.push(chunk.map_or_else(String::new, |(_, v)| v.to_string()));
                    }
                    (Ticket::Sealed(values), None)
                })
                .collect(),
        }
    }

    /// The load phase of a request: the session its cookies name, and the
    /// `Cookie` header to forward without the session's cookies (`None`:
    /// forward the headers as they are; `Some(None)`: no `Cookie` at all).
    pub async fn load_request(
        &self,
        headers: &http::HeaderMap,
        now: UnixMillis,
    ) -> Result<(Loaded, Option<Option<HeaderValue>>), SessionError> {
        let cookies = cookie::split_request_cookies(headers, self.codec.name());
        let loaded = self.load(&cookies, now).await?;
        Ok((loaded, cookies.forwarded))
    }

    /// Reads and strips an upstream response's session headers: what it
    /// asks of the session, or `None` when it changes nothing (a 5xx, or no
    /// write-back and no rolling expiry). A write-back that does not parse
    /// is refused whole (and counted).
    pub fn take_writeback(
        &self,
        headers: &mut http::HeaderMap,
        status: http::StatusCode,
        scope: &crate::config::WriteScope,
    ) -> Result<Option<Writeback>, SessionError> {
        let names = &self.headers;
        if !headers.keys().any(|k| names.is_internal(k)) {
            return Ok((self.save_every_request && status.as_u16() < 500).then(Writeback::default));
        }
        let parsed = if status.as_u16() >= 500 {
            // Django skips the save on server errors; the headers are stripped, never judged.
            Ok(None)
        } else {
            Writeback::parse(
                headers.get_all(&names.update),
                headers.get_all(&names.action),
            )
            .and_then(|wb| wb.check(scope).map(|()| wb))
            .map(|wb| (!wb.is_empty() || self.save_every_request).then_some(wb))
        };
        names.remove_from(headers);
        parsed.map_err(|e| self.refused(e))
    }

    /// Finds the session the request's cookies name. Cookies that are
    /// malformed, forged, or name no live session are no session.
    pub async fn load(
        &self,
        cookies: &RequestCookies<'_>,
        now: UnixMillis,
    ) -> Result<Loaded, SessionError> {
        let chunks = cookies.chunks.iter().map(|(n, _)| *n).collect();
        for (ticket, signed) in self.tickets(cookies) {
            match self
                .timed(StoreOp::load, self.backend.store.load(&ticket, now))
                .await
            {
                Ok(Some(record)) => {
                    return Ok(Loaded {
                        ticket: Some(ticket),
                        record: Some(record),
                        chunks,
                        signed,
                        ..Loaded::default()
                    });
                }
                Ok(None) => continue,
                Err(e) => match self.on_store_error {
                    OnStoreError::FailClosed => return Err(SessionError::StoreRead(e)),
                    OnStoreError::FailOpen => {
                        crate::limited!(crate::logging::LogClass::store, warn, error = %crate::logging::Chain(&e), "session store unavailable; forwarding with an empty session (fail_open)");
                        return Ok(Loaded {
                            degraded: true,
                            chunks,
                            ..Loaded::default()
                        });
                    }
                },
            }
        }
        Ok(Loaded {
            chunks,
            ..Loaded::default()
        })
    }

    /// A write that failed after the upstream answered: 502 under
    /// `fail_closed`; under `fail_open` the write is dropped and the response passes.
    fn write_failed(&self, e: StoreError) -> Result<(), SessionError> {
        self.metrics.event(SessionEvent::store_write_failed);
        match self.on_store_error {
            OnStoreError::FailClosed => Err(SessionError::StoreWrite(e)),
            OnStoreError::FailOpen => {
                self.metrics.event(SessionEvent::dropped);
                crate::limited!(crate::logging::LogClass::store, warn, error = %crate::logging::Chain(&e), "session write dropped: store unavailable (fail_open)");
                Ok(())
            }
        }
    }

    fn refused(&self, e: crate::record::UpdateError) -> SessionError {
        self.metrics.event(SessionEvent::refused);
        SessionError::UpdateRefused(e)
    }

    /// The `Set-Cookie`s that give the client a ticket, and expire any of
    /// the numbered cookies it holds beyond the new ticket's.
    /// `signed`: the MAC the request's cookie carried for `ticket`'s id,
    /// if the signing secret made it.
    fn cookies_for(
        &self,
        ticket: &Ticket,
        signed: Option<&CookieMac>,
        record: &SessionRecord,
        held: &[usize],
        now: UnixMillis,
    ) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        let count = match ticket {
            Ticket::Id(id) => {
                let value = match signed {
                    Some(mac) => Cow::Borrowed(CookieCodec::encode_signed(mac)),
                    None => Cow::Owned(self.codec.encode(id)),
                };
                out.push(self.codec.set_cookie(&value, record, &self.policy, now));
                1
            }
            Ticket::Sealed(values) => {
                for (i, value) in values.iter().enumerate() {
                    let name = self.codec.chunk_name(i);
                    out.push(
                        self.codec
                            .set_cookie_named(&name, value, record, &self.policy, now),
                    );
                }
                values.len()
            }
        };
        self.expire_chunks(held, count, &mut out);
        out
    }

    /// Expires the numbered cookies the client holds from `from` on.
    fn expire_chunks(&self, held: &[usize], from: usize, out: &mut Vec<HeaderValue>) {
        for n in held {
            if *n >= from.max(1) {
                out.push(self.codec.removal_named(&self.codec.chunk_name(*n)));
            }
        }
    }

    /// The main cookie expired, with every numbered one the client holds.
    fn removal(&self, held: &[usize]) -> Vec<HeaderValue> {
        let mut out = vec![self.codec.removal()];
        self.expire_chunks(held, 1, &mut out);
        out
    }

    /// Applies an upstream's write-back; returns the `Set-Cookie` headers to
    /// send and the session they leave. One path for every store: a flush
    /// deletes, a write without a session creates, anything else is one
    /// atomic save in the store.
    pub async fn write_back(
        &self,
        loaded: &Loaded,
        wb: &Writeback,
        now: UnixMillis,
    ) -> Result<Written, SessionError> {
        if loaded.degraded {
            if !wb.is_empty() {
                self.metrics.event(SessionEvent::dropped);
                crate::limited!(
                    crate::logging::LogClass::store,
                    warn,
                    "session write dropped: the session could not be read (fail_open)"
                );
            }
            return Ok(Written::unchanged());
        }
        if wb.revoke_others {
            // Refused before anything is written.
            self.subject_key().map_err(SessionError::NotManaged)?;
        }
        let change = Change {
            patches: &wb.patches,
            expiry_s: wb.expiry,
        };
        let held = &loaded.chunks;
        if wb.flush {
            // A session that replaces the flushed one is checked first, so a
            // refused update leaves the old session untouched.
            let replacement = self.new_session(&change, now)?;
            let mut ended = Written::unchanged();
            if let Some(ticket) = &loaded.ticket {
                match self
                    .timed(StoreOp::delete, self.backend.store.delete(ticket))
                    .await
                {
                    Ok(true) => {
                        self.metrics.event(SessionEvent::flushed);
                        ended = Written::ended(self.removal(held));
                    }
                    Ok(false) => {
                        // Already flushed, cycled by a concurrent login, or expired:
                        // the cookie the browser holds by now is left alone.
                        self.metrics.event(SessionEvent::dropped);
                        tracing::info!(
                            "session flush dropped: the session ended while the request was in flight"
                        );
                        // "Log out everywhere" still happens.
                        if wb.revoke_others {
                            self.revoke_others_of(loaded.record.as_deref(), None, now)
                                .await?;
                        }
                        return Ok(Written::unchanged());
                    }
                    Err(e) => {
                        self.write_failed(e)?;
                        return Ok(Written::unchanged());
                    }
                }
                // `flush, revoke-others`: every session of the flushed one's
                // subject goes (log out everywhere).
                if wb.revoke_others {
                    self.revoke_others_of(loaded.record.as_deref(), None, now)
                        .await?;
                }
            }
            if let Some((id, record)) = replacement {
                return self.create(id, record, now, held, ended, false).await;
            }
            return Ok(ended);
        }
        let Some(ticket) = &loaded.ticket else {
            return match self.new_session(&change, now)? {
                Some((id, record)) => {
                    self.create(
                        id,
                        record,
                        now,
                        held,
                        Written::unchanged(),
                        wb.revoke_others,
                    )
                    .await
                }
                None => Ok(Written::unchanged()),
            };
        };
        let asked = !wb.patches.is_empty() || wb.expiry.is_some() || wb.cycle || wb.revoke_others;
        if !asked && !self.save_every_request {
            return Ok(Written::unchanged());
        }
        let cycle_to = wb.cycle.then(|| {
            let new_id = SessionId::generate();
            let sid = self.codec.sid(&new_id);
            (new_id, sid)
        });
        let saved = match self
            .save_indexed(ticket, loaded.record.as_deref(), change, cycle_to, now)
            .await
        {
            Ok(saved) => saved,
            Err(e) => {
                self.write_failed(e)?;
                return Ok(Written::unchanged());
            }
        };
        match saved {
            (SaveOutcome::Saved { id, record }, indexed) => {
                if wb.cycle {
                    self.metrics.event(SessionEvent::cycled);
                }
                if let Ticket::Id(new_id) = &id {
                    if let Some((subject, entries)) = &indexed {
                        self.after_indexed(subject, *entries, new_id, now).await;
                    }
                    if wb.revoke_others {
                        self.revoke_others_of(Some(&record), Some(new_id), now)
                            .await?;
                    }
                }
                // The same id renews the cookie the client holds.
                let signed = loaded
                    .signed
                    .as_ref()
                    .filter(|_| Some(&id) == loaded.ticket.as_ref());
                Ok(Written {
                    cookies: self.cookies_for(&id, signed, &record, held, now),
                    after: After::Now(record.sid.clone()),
                })
            }
            (SaveOutcome::Emptied, _) => {
                self.metrics.event(SessionEvent::flushed);
                // This session is gone: revoke-others then ends every one.
                if wb.revoke_others {
                    self.revoke_others_of(loaded.record.as_deref(), None, now)
                        .await?;
                }
                Ok(Written::ended(self.removal(held)))
            }
            (SaveOutcome::Gone, _) => {
                // Flushed, cycled, revoked or expired while this request was
                // in flight: writing now would undo a logout or a login.
                self.metrics.event(SessionEvent::dropped);
                tracing::info!(
                    "session write dropped: the session ended while the request was in flight"
                );
                if wb.revoke_others {
                    self.revoke_others_of(loaded.record.as_deref(), None, now)
                        .await?;
                }
                Ok(Written::unchanged())
            }
            (SaveOutcome::Refused(e), _) => Err(self.refused(e)),
            (SaveOutcome::Reindex(_), _) => {
                self.write_failed(StoreError::Backend(
                    "the session's subject kept changing while it was cycled".into(),
                ))?;
                Ok(Written::unchanged())
            }
        }
    }

    /// A save, with the index of subjects kept ahead of it: a write that
    /// gives the session a subject, or moves it to a new id, indexes it
    /// under that subject first. Says which subject it indexed, if any, and
    /// how many entries that subject's index then held.
    async fn save_indexed(
        &self,
        ticket: &Ticket,
        current: Option<&SessionRecord>,
        change: Change<'_>,
        cycle_to: Option<(SessionId, String)>,
        now: UnixMillis,
    ) -> Result<(SaveOutcome<Ticket>, Option<(String, u64)>), StoreError> {
        let mut target = None;
        let mut expect = None;
        let mut entry = None;
        if let (Some(key), Ticket::Id(id), Some(current)) = (self.indexing(), ticket, current) {
            let patched = patched(change.patches, key);
            entry = Some(match &cycle_to {
                Some((new_id, sid)) => IndexEntry {
                    id: *new_id,
                    sid: sid.clone(),
                    created_ms: current.created_ms,
                },
                None => IndexEntry {
                    id: *id,
                    sid: current.sid.clone(),
                    created_ms: current.created_ms,
                },
            });
            target = match (&cycle_to, patched) {
                (Some(_), p) => {
                    let s = p.unwrap_or_else(|| subject_of(&current.data, key));
                    expect = Some(s.clone());
                    s
                }
                (None, Some(s)) => s,
                (None, None) => None,
            };
        }
        let mut indexed = None;
        for _ in 0..3 {
            let op = SaveOp {
                change,
                cycle_to: cycle_to.clone(),
                now_ms: now,
                policy: self.policy,
                expect: match (self.indexing(), &expect) {
                    (Some(key), Some(subject)) => Some(Expect {
                        key,
                        subject: subject.as_deref(),
                    }),
                    _ => None,
                },
                base: current,
            };
            let outcome = match (target.take(), &entry) {
                // The entry and the save, in one step where the store can.
                (Some(subject), Some(e)) => {
                    let (n, outcome) = self
                        .timed(
                            StoreOp::save,
                            self.backend.store.save_indexed(&subject, e, ticket, &op),
                        )
                        .await?;
                    indexed = Some((subject, n));
                    outcome
                }
                _ => {
                    self.timed(StoreOp::save, self.backend.store.save(ticket, &op))
                        .await?
                }
            };
            let SaveOutcome::Reindex(actual) = outcome else {
                return Ok((outcome, indexed));
            };
            // A concurrent write changed the subject since this request
            // read the session: the new id is indexed under the one it has.
            target.clone_from(&actual);
            expect = Some(actual);
        }
        Ok((SaveOutcome::Reindex(None), indexed))
    }

    /// `revoke-others`: every other session of this session's subject.
    async fn revoke_others_of(
        &self,
        record: Option<&SessionRecord>,
        keep: Option<&SessionId>,
        now: UnixMillis,
    ) -> Result<(), SessionError> {
        let key = self.subject_key().map_err(SessionError::NotManaged)?;
        let Some(subject) = record.and_then(|r| subject_of(&r.data, key)) else {
            return Ok(());
        };
        match self.revoke_subject(&subject, keep, now).await {
            Ok(n) => {
                tracing::info!(
                    revoked = n,
                    "revoke-others: the subject's other sessions revoked"
                );
                Ok(())
            }
            Err(ManageError::Store(e)) => self.write_failed(e),
            Err(e) => Err(SessionError::NotManaged(e)),
        }
    }

    /// `write_back`, never cut in two: once a write has started it
    /// completes or fails as a whole, even if the client hangs up and its
    /// request is dropped half-way (a flush then its replacement, a Cluster
    /// cycle's steps); the rest then runs on a task of its own.
    pub async fn write_back_detached(
        self: &Arc<Self>,
        loaded: Loaded,
        wb: Writeback,
        now: UnixMillis,
    ) -> Result<Written, SessionError> {
        let sessions = self.clone();
        let detached =
            Detached::new(move || async move { sessions.write_back(&loaded, &wb, now).await });
        match detached.await {
            Ok(written) => written,
            // Store panics are caught in `timed`; this is one elsewhere: the
            // write fails, readiness is not touched.
            Err(payload) => {
                let e = StoreError::panicked(payload);
                tracing::error!(error = %e, "a session write-back panicked");
                self.write_failed(e)?;
                Ok(Written::unchanged())
            }
        }
    }

    /// The session an upstream's write creates, if the data comes out non-empty.
    fn new_session(
        &self,
        change: &Change<'_>,
        now: UnixMillis,
    ) -> Result<Option<(SessionId, SessionRecord)>, SessionError> {
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
        id: SessionId,
        record: SessionRecord,
        now: UnixMillis,
        held: &[usize],
        otherwise: Written,
        revoke_others: bool,
    ) -> Result<Written, SessionError> {
        let subject = self
            .indexing()
            .and_then(|key| subject_of(&record.data, key));
        let created = match &subject {
            // The entry and the session, in one step where the store can.
            Some(subject) => {
                let entry = IndexEntry {
                    id,
                    sid: record.sid.clone(),
                    created_ms: record.created_ms,
                };
                self.timed(
                    StoreOp::create,
                    self.backend
                        .store
                        .create_indexed(subject, &entry, &record, now),
                )
                .await
                .map(|(n, created)| (Some(n), created))
            }
            None => self
                .timed(StoreOp::create, self.backend.store.create(&id, &record))
                .await
                .map(|created| (None, created)),
        };
        match created {
            Ok((entries, Created::Stored(ticket))) => {
                self.metrics.event(SessionEvent::created);
                if let (Some(subject), Some(n)) = (&subject, entries) {
                    self.after_indexed(subject, n, &id, now).await;
                }
                if revoke_others {
                    self.revoke_others_of(Some(&record), Some(&id), now).await?;
                }
                Ok(Written {
                    cookies: self.cookies_for(&ticket, None, &record, held, now),
                    after: After::Now(record.sid.clone()),
                })
            }
            Ok((_, Created::Refused(e))) => Err(self.refused(e)),
            Err(e) => {
                self.write_failed(e)?;
                Ok(otherwise)
            }
        }
    }

    /// Deletes expired sessions; counted as `expired` events.
    pub async fn sweep(&self, now: UnixMillis) -> Result<u64, StoreError> {
        let n = self
            .timed(
                StoreOp::clear_expired,
                self.backend.store.clear_expired(now),
            )
            .await?;
        self.metrics.event_n(SessionEvent::expired, n);
        if let (Store::Memory(m), Some(key)) = (&*self.backend.store, self.indexing()) {
            // Evicted and expired sessions leave their entries behind.
            m.sweep_index(key, now);
        }
        Ok(n)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOp::ping, self.backend.store.ping()).await
    }
}
