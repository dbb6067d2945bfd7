//! Write latency on the embedded store while it sweeps many expired
//! sessions, beside the same writes without a sweep before and after it.
//! `cargo bench --bench sweep` (EXPIRED=1000000 to choose the size).

use serde_json::json;
use sessiongate::record::{SessionData, SessionId, SessionRecord, now_ms};
use sessiongate::store::ServerStore;
use sessiongate::store::embedded::EmbeddedStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Concurrent writers, as concurrent requests would be.
const WRITERS: usize = 8;
/// Writes each writer makes at least.
const MIN_WRITES: usize = 300;

fn record(now: u64, expires_ms: u64) -> SessionRecord {
    let mut r = SessionRecord::new("sid".into(), now);
    r.data = SessionData::from_map(
        json!({"user_id": 1, "email": "user@example.com", "roles": ["user"], "theme": "dark"})
            .as_object()
            .unwrap(),
    );
    r.expires_ms = expires_ms;
    r
}

async fn fill_expired(store: &Arc<EmbeddedStore>, n: usize) {
    let now = now_ms();
    let expired = record(now, now - 1);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(20_000);
        let creates = (0..chunk).map(|_| {
            let (store, r) = (store.clone(), expired.clone());
            async move { store.create(&SessionId::generate(), &r).await.unwrap() }
        });
        futures_util::future::join_all(creates).await;
        left -= chunk;
    }
}

/// Latencies of creates by `WRITERS` concurrent writers, each making at
/// least `MIN_WRITES` and going on while `busy` holds.
async fn write_latencies(store: &Arc<EmbeddedStore>, busy: Arc<AtomicBool>) -> Vec<Duration> {
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, busy) = (store.clone(), busy.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while out.len() < MIN_WRITES || busy.load(Ordering::Relaxed) {
                    let now = now_ms();
                    let r = record(now, now + 3_600_000);
                    let start = Instant::now();
                    store.create(&SessionId::generate(), &r).await.unwrap();
                    out.push(start.elapsed());
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn row(name: &str, l: &[Duration]) {
    println!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} |",
        l.len(),
        quantile(l, 0.5),
        quantile(l, 0.99),
        quantile(l, 1.0)
    );
}

fn main() {
    let expired: usize = std::env::var("EXPIRED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-sweep-bench-{}",
            SessionId::generate().encode()
        ));
        let store = Arc::new(EmbeddedStore::open(&dir.join("s.db")).unwrap());
        let start = Instant::now();
        fill_expired(&store, expired).await;
        eprintln!("{expired} expired sessions written in {:?}", start.elapsed());

        let before = write_latencies(&store, Arc::new(AtomicBool::new(false))).await;

        let busy = Arc::new(AtomicBool::new(true));
        let sweep = {
            let (store, busy) = (store.clone(), busy.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let n = store.clear_expired(now_ms()).await.unwrap();
                busy.store(false, Ordering::Relaxed);
                (n, start.elapsed())
            })
        };
        let during = write_latencies(&store, busy).await;
        let (swept, took) = sweep.await.unwrap();

        let after = write_latencies(&store, Arc::new(AtomicBool::new(false))).await;

        println!(
            "embedded store, {WRITERS} concurrent writers; sweep of {swept} expired sessions took {:.1} s",
            took.as_secs_f64()
        );
        println!("| writes | n | p50 ms | p99 ms | max ms |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        row("before the sweep", &before);
        row("during the sweep", &during);
        row("after the sweep", &after);
        let baseline = quantile(&before, 0.99).max(quantile(&after, 0.99));
        println!(
            "p99 during / p99 without: {:.2}",
            quantile(&during, 0.99) / baseline
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
