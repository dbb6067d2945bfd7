//! Session-read throughput of the memory and embedded stores at 1,000 to
//! 1,000,000 live sessions, and the memory store's cost per session.
//! `cargo bench --bench store_scale` (SESSIONS=1000,100000 to choose sizes).

use serde_json::json;
use sessiongate::record::SessionData;
use sessiongate::record::SessionId;
use sessiongate::record::{SessionRecord, now_ms};
use sessiongate::store::ServerStore;
use sessiongate::store::embedded::EmbeddedStore;
use sessiongate::store::memory::MemoryStore;
use std::time::{Duration, Instant};

const READS: usize = 200_000;

fn record(i: usize, now: u64) -> SessionRecord {
    let mut r = SessionRecord::new(format!("sid-{i}"), now);
    r.data = SessionData::from_map(
        json!({"user_id": i, "email": format!("user{i}@example.com"), "roles": ["user"], "theme": "dark"})
            .as_object()
            .unwrap(),
    );
    r.expires_ms = now + 3_600_000;
    r
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Reads per second of random live sessions, median of 5 rounds.
async fn reads_per_second<S: ServerStore>(store: &S, ids: &[SessionId]) -> f64 {
    let now = now_ms();
    let mut rounds = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..READS / 5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = &ids[(x % ids.len() as u64) as usize];
            assert!(store.load(id, now).await.unwrap().is_some());
        }
        rounds.push((READS / 5) as f64 / start.elapsed().as_secs_f64());
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("SESSIONS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000]);
    let now = now_ms();
    println!("store     sessions   reads/s    ratio_to_smallest  rss_per_session  sweep_ms");
    for kind in ["memory", "embedded"] {
        let mut first = None;
        for &n in &sizes {
            let ids: Vec<SessionId> = (0..n).map(|_| SessionId::generate()).collect();
            let (rate, per_session, sweep) = match kind {
                "memory" => {
                    let before = rss_kib();
                    // Shards bound their share each: room to spare keeps every session live.
                    let store = MemoryStore::new(2 * n);
                    for (i, id) in ids.iter().enumerate() {
                        store.create(id, &record(i, now)).await.unwrap();
                    }
                    let per = (rss_kib().saturating_sub(before)) as f64 * 1024.0 / n as f64;
                    let rate = reads_per_second(&store, &ids).await;
                    // The minutely sweep's walk over every session (none expired).
                    let start = Instant::now();
                    assert_eq!(store.clear_expired(now).await.unwrap(), 0);
                    (rate, Some(per), Some(start.elapsed()))
                }
                _ => {
                    let dir =
                        std::env::temp_dir().join(format!("sg-scale-{}-{n}", std::process::id()));
                    let _ = std::fs::remove_dir_all(&dir);
                    let store = EmbeddedStore::open(&dir.join("s.db")).unwrap();
                    // Concurrent creates share commits (group commit); 512 at a time.
                    for chunk in ids.chunks(512) {
                        let futs = chunk.iter().enumerate().map(|(i, id)| {
                            let r = record(i, now);
                            let store = &store;
                            async move { store.create(id, &r).await.unwrap() }
                        });
                        futures_join_all(futs).await;
                    }
                    let rate = reads_per_second(&store, &ids).await;
                    drop(store);
                    let _ = std::fs::remove_dir_all(&dir);
                    (rate, None, None)
                }
            };
            let base = *first.get_or_insert(rate);
            println!(
                "{kind:<9} {n:>9}  {rate:>9.0}  {:>8.2}  {:>15}  {}",
                rate / base,
                per_session.map_or("-".to_string(), |b| format!("{b:.0} bytes")),
                sweep.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs futures concurrently on this task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
