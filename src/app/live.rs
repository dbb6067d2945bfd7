//! The handlers of the running config, swapped whole by a reload: each
//! request takes the current one once, with a lock-free load, and keeps it
//! to its end, so that a request in flight finishes under the config it
//! started with.

use crate::admin::Admin;
use crate::http1::{ConnInfo, Handler, RequestBody};
use crate::proxy::{Proxy, ProxyBody};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use std::future::Future;
use std::sync::Arc;

pub(super) struct Live<H>(ArcSwap<H>);

impl<H> Live<H> {
    pub(super) fn new(handler: Arc<H>) -> Arc<Self> {
        Arc::new(Live(ArcSwap::new(handler)))
    }

    pub(super) fn current(&self) -> Arc<H> {
        self.0.load_full()
    }

    pub(super) fn replace(&self, handler: Arc<H>) {
        self.0.store(handler);
    }
}

impl Handler for Live<Proxy> {
    type Body = ProxyBody;

    fn call(
        self: &Arc<Self>,
        request: Box<Request<RequestBody>>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Box<Response<ProxyBody>>> + Send {
        self.current().handle(request, conn.clone())
    }
}

impl Handler for Live<Admin> {
    type Body = Full<Bytes>;

    fn call(
        self: &Arc<Self>,
        request: Box<Request<RequestBody>>,
        _conn: &ConnInfo,
    ) -> impl Future<Output = Box<Response<Full<Bytes>>>> + Send {
        let admin = self.current();
        async move { Box::new(admin.handle(&request).await) }
    }
}
