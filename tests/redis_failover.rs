//! Redis Cluster and Sentinel failing over under traffic from two
//! sessiongate instances: how many writes answered 200 are missing
//! afterwards (must be none), how long until every writer succeeds again
//! without a restart of sessiongate, and how many requests failed
//! meanwhile. They take a minute and print their figures, so they are
//! ignored by `cargo test` (listed as such) and run by `bench/failover.sh`.

mod common;

use common::redis::{Cluster, Sentinel, available};
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;

/// What one writer saw: its session, the writes answered 200 and the ones
/// that failed (each write adds its own key, so a write lost and then
/// followed by others still shows), and when it first succeeded after the
/// fault.
struct Writer {
    cookie: String,
    acked: Vec<u64>,
    refused: Vec<u64>,
    failed: u64,
    recovered: Option<Instant>,
}

/// Writes per writer at most: each adds a key of about 12 bytes, so the
/// session stays far below `max_bytes`.
const MAX_WRITES: u64 = 2_500;

async fn write(c: &TestClient, gw: &Gateway, cookie: &str, n: u64) -> u16 {
    let update = format!(r#"{{"n":{n},"w{n}":1}}"#);
    let h = [
        ("cookie", cookie.to_string()),
        reply("X-Session-Update", &update),
    ];
    c.get(&gw.url("/"), &hdrs(&h)).await.status
}

/// Each writer raises its session's counter through both instances in
/// turn, until `stop`; `fault_at` is set by the test when it strikes.
async fn run_writer(
    gws: Arc<[Gateway; 2]>,
    mut w: Writer,
    stop: Arc<AtomicBool>,
    fault_at: Arc<std::sync::Mutex<Option<Instant>>>,
) -> Writer {
    let c = TestClient::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < MAX_WRITES {
        n += 1;
        let status = write(&c, &gws[(n % 2) as usize], &w.cookie, n).await;
        let struck = *fault_at.lock().unwrap();
        if status == 200 {
            w.acked.push(n);
            if let Some(t) = struck
                && w.recovered.is_none()
                && w.failed > 0
            {
                w.recovered = Some(Instant::now().max(t));
            }
        } else {
            w.failed += 1;
            w.refused.push(n);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Paced, so that the writes span the fault and its recovery.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w
}

/// Runs the writers, strikes with `fault` after two seconds, lets them
/// recover, and reports what was lost.
/// Whether every writer must succeed again once the fault is over.
#[derive(PartialEq)]
enum Recovery {
    Expected,
    /// `replicas_ack` refuses the writes of a shard left without a replica.
    NotForAShardWithoutReplica,
}

async fn under_traffic(
    store: &str,
    name: &str,
    recovery: Recovery,
    fault: impl FnOnce() + Send + 'static,
) {
    let up = upstream().await;
    let gws = Arc::new([
        gateway(&store_yaml(store, "fail_closed"), up.addr).await,
        gateway(&store_yaml(store, "fail_closed"), up.addr).await,
    ]);
    let c = TestClient::new();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let r = c
            .get(
                &gws[0].url("/login"),
                &hdrs(&[reply("X-Session-Update", r#"{"n":0}"#)]),
            )
            .await;
        assert_eq!(r.status, 200);
        writers.push(Writer {
            cookie: r.cookie("sessionid").unwrap(),
            acked: Vec::new(),
            refused: Vec::new(),
            failed: 0,
            recovered: None,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let fault_at = Arc::new(std::sync::Mutex::new(None));
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|w| tokio::spawn(run_writer(gws.clone(), w, stop.clone(), fault_at.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let struck = Instant::now();
    *fault_at.lock().unwrap() = Some(struck);
    tokio::task::spawn_blocking(fault).await.unwrap();
    // Traffic goes on until the fault is long over.
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(t.await.unwrap());
    }

    let mut lost = 0;
    let mut ahead = 0;
    let mut acked = 0;
    for w in &writers {
        let r = c.get(&gws[1].url("/"), &[("cookie", &w.cookie)]).await;
        assert_eq!(r.status, 200, "the session is readable after the fault");
        let session = r.session();
        let has = |n: &u64| session.get(format!("w{n}")).is_some();
        lost += w.acked.iter().filter(|n| !has(n)).count();
        // Applied, but its answer was lost with the connection: a 502 for
        // a write that did happen (never the other way round).
        ahead += w.refused.iter().filter(|n| has(n)).count();
        acked += w.acked.len();
    }
    let failed: u64 = writers.iter().map(|w| w.failed).sum();
    let back = writers
        .iter()
        .filter_map(|w| w.recovered)
        .map(|t| t.duration_since(struck))
        .max()
        .unwrap_or_default();
    let never = writers
        .iter()
        .filter(|w| w.failed > 0 && w.recovered.is_none())
        .count();
    println!(
        "FAILOVER {name}: {acked} writes answered 200, {lost} of them missing afterwards; \
         {failed} requests failed; the writers that recovered did so {:.1} s after the fault, \
         {never} of {WRITERS} never did; {ahead} writes answered 502 that did land",
        back.as_secs_f64()
    );
    assert_eq!(lost, 0, "{name}: acknowledged writes lost");
    if recovery == Recovery::Expected {
        assert_eq!(never, 0, "{name}: writers that never recovered");
    }
    let gws = Arc::try_unwrap(gws).ok().expect("writers are done");
    for gw in gws {
        gw.stop().await;
    }
}

fn cluster_store(cluster: &Cluster) -> String {
    format!(
        "{{kind: redis, cluster: {}, timeout: 1s}}",
        cluster.yaml_nodes()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of failover under traffic: bench/failover.sh runs it"]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_cluster_master_killed_under_traffic_loses_no_acknowledged_write() {
    if !available("a_cluster_master_killed_under_traffic_loses_no_acknowledged_write") {
        return;
    }
    let cluster = Arc::new(std::sync::Mutex::new(
        tokio::task::spawn_blocking(Cluster::start_replicated)
            .await
            .unwrap(),
    ));
    let store = cluster_store(&cluster.lock().unwrap());
    let victim = cluster.clone();
    under_traffic(
        &store,
        "cluster, master SIGKILLed",
        Recovery::Expected,
        move || {
            let mut c = victim.lock().unwrap();
            let master = c.masters()[0];
            c.nodes[master].kill();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of failover under traffic: bench/failover.sh runs it"]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn with_replicas_ack_a_cluster_master_killed_loses_no_acknowledged_write() {
    if !available("with_replicas_ack_a_cluster_master_killed_loses_no_acknowledged_write") {
        return;
    }
    let cluster = Arc::new(std::sync::Mutex::new(
        tokio::task::spawn_blocking(Cluster::start_replicated)
            .await
            .unwrap(),
    ));
    let store = cluster_store(&cluster.lock().unwrap())
        .replace("timeout: 1s", "timeout: 1s, replicas_ack: 1");
    let victim = cluster.clone();
    under_traffic(
        &store,
        "cluster with replicas_ack 1, master SIGKILLed",
        Recovery::NotForAShardWithoutReplica,
        move || {
            let mut c = victim.lock().unwrap();
            let master = c.masters()[0];
            c.nodes[master].kill();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of failover under traffic: bench/failover.sh runs it"]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_cluster_master_paused_past_the_node_timeout_loses_no_acknowledged_write() {
    if !available("a_cluster_master_paused_past_the_node_timeout_loses_no_acknowledged_write") {
        return;
    }
    let cluster = Arc::new(
        tokio::task::spawn_blocking(Cluster::start_replicated)
            .await
            .unwrap(),
    );
    let store = cluster_store(&cluster);
    let victim = cluster.clone();
    under_traffic(
        &store,
        "cluster, master SIGSTOPped 6 s",
        Recovery::Expected,
        move || {
            let master = victim.masters()[0];
            victim.nodes[master].pause();
            std::thread::sleep(Duration::from_secs(6));
            victim.nodes[master].resume();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of failover under traffic: bench/failover.sh runs it"]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_sentinel_failover_under_traffic_loses_no_acknowledged_write() {
    if !available("a_sentinel_failover_under_traffic_loses_no_acknowledged_write") {
        return;
    }
    let setup = Arc::new(std::sync::Mutex::new(
        tokio::task::spawn_blocking(Sentinel::start).await.unwrap(),
    ));
    let store = format!(
        "{{kind: redis, sentinel: {{master: mymaster, nodes: [\"{}\"]}}, timeout: 1s}}",
        setup.lock().unwrap().sentinel.url()
    );
    let victim = setup.clone();
    under_traffic(
        &store,
        "sentinel, master SIGKILLed",
        Recovery::Expected,
        move || {
            victim.lock().unwrap().master.kill();
        },
    )
    .await;
}

/// A network namespace joined to this one by a veth pair: a host whose link
/// the test can cut (packets then vanish, as in a partition: no reset, no
/// refusal) and heal. Needs root; removed on drop.
struct Namespace {
    name: String,
    host_if: String,
    peer_if: String,
    /// The namespace's address.
    addr: String,
    redis: Option<std::process::Child>,
}

fn ip(args: &[&str]) {
    let ok = std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "ip {} failed (network namespaces need root)",
        args.join(" ")
    );
}

impl Namespace {
    fn create() -> Namespace {
        let n = std::process::id() % 200;
        let ns = Namespace {
            name: format!("sgtest{n}"),
            host_if: format!("sgh{n}"),
            peer_if: format!("sgp{n}"),
            addr: format!("10.77.{n}.2"),
            redis: None,
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.peer_if,
        ]);
        ip(&["link", "set", &ns.peer_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("10.77.{n}.1/30"),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.inside(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.addr),
            "dev",
            &ns.peer_if,
        ]);
        ns.inside(&["ip", "link", "set", &ns.peer_if, "up"]);
        ns.inside(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn inside(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend(cmd);
        ip(&args);
    }

    /// A durable redis-server inside, on port 6379.
    fn start_redis(&mut self) -> String {
        let dir = common::redis::temp_dir("netns");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "redis-server"])
            .args([
                "--bind",
                &self.addr,
                "--port",
                "6379",
                "--protected-mode",
                "no",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(["--logfile", "redis.log"])
            .spawn()
            .expect("redis-server starts in the namespace");
        self.redis = Some(child);
        let target: std::net::SocketAddr = format!("{}:6379", self.addr).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis in the namespace never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        format!("redis://{}:6379", self.addr)
    }

    /// The namespace's end of the link goes down: what is sent to it vanishes.
    fn cut(&self) {
        self.inside(&["ip", "link", "set", &self.peer_if, "down"]);
    }

    fn heal(&self) {
        self.inside(&["ip", "link", "set", &self.peer_if, "up"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of failover under traffic: bench/failover.sh runs it"]
#[cfg_attr(
    not(tool_redis),
    ignore = "needs redis-server (apt-get install redis-server)"
)]
async fn a_redis_cut_off_by_the_network_fails_closed_and_recovers_when_it_heals() {
    if !available("a_redis_cut_off_by_the_network_fails_closed_and_recovers_when_it_heals") {
        return;
    }
    let mut ns = Namespace::create();
    let url = ns.start_redis();
    let ns = Arc::new(ns);
    let store = format!("{{kind: redis, url: \"{url}\", timeout: 1s}}");
    let link = ns.clone();
    under_traffic(
        &store,
        "standalone, network cut for 5 s",
        Recovery::Expected,
        move || {
            link.cut();
            std::thread::sleep(Duration::from_secs(5));
            link.heal();
        },
    )
    .await;
}
