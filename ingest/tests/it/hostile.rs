//! The `ingest` binary under hostile clients, as a process (memory and shutdown are a
//! process's behaviour): thousands of connections that trickle bodies with a wrong signature,
//! send oversized or never-finished headers, while real signed webhooks keep arriving.
//!
//! What must hold: every real delivery gets 200 while the attack runs; RSS stays bounded and
//! comes back down after the attackers leave; SIGTERM with trickling clients still connected
//! ends the process within the configured grace. The figures are printed for the docs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_ingest");
const SECRET: &[u8] = b"dev-secret";
const SHOP: &str = "dev.myshopify.com";

struct Ingest {
    child: Child,
    public: String,
    admin: String,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &[(&str, &str)]) -> Ingest {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TIERFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .env("TIERFLOW_INGEST__LISTEN", "127.0.0.1:0")
        .env("TIERFLOW_INGEST__ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("ingest listening on"))
        .expect("the binary announces where it listens");
    let urls: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .collect();
    let host = |u: &str| {
        u.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    Ingest {
        public: host(urls[0]),
        admin: host(urls[1]),
        child,
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn metric(client: &reqwest::Client, admin: &str, series: &str) -> f64 {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn signed_order(n: u64) -> loadgen::Webhook {
    let spec =
        loadgen::payload::OrderSpec::random(&mut rand::rng(), 5_000_000 + n, Some(7_000 + n));
    let body = loadgen::payload::order_body(&spec, SHOP);
    loadgen::Webhook::signed("orders/create", SHOP, &format!("real-{n}"), SECRET, body)
}

/// A request head with a wrong signature announcing a body it will only trickle.
fn trickle_head(addr: &str) -> Vec<u8> {
    format!(
        "POST /webhooks/shopify HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Topic: orders/create\r\n\
         X-Shopify-Hmac-Sha256: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\
         X-Shopify-Shop-Domain: {SHOP}\r\nX-Shopify-API-Version: 2025-07\r\n\
         X-Shopify-Webhook-Id: attack\r\nContent-Length: 900000\r\n\r\n"
    )
    .into_bytes()
}

/// Keep one hostile connection going until `stop`: reconnect whenever the server closes it.
async fn attacker(kind: u8, addr: String, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let result: std::io::Result<()> = async {
            match kind {
                // A wrong signature, then one body byte every 300 ms.
                0 => {
                    s.write_all(&trickle_head(&addr)).await?;
                    while !stop.load(Ordering::Relaxed) {
                        s.write_all(b"x").await?;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                // 300 KB of a header that never ends.
                1 => {
                    s.write_all(b"POST /webhooks/shopify HTTP/1.1\r\nX-Filler: ")
                        .await?;
                    let chunk = vec![b'a'; 4096];
                    for _ in 0..75 {
                        s.write_all(&chunk).await?;
                    }
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        s.write_all(b"a").await?;
                    }
                }
                // Slowloris: a header byte every 300 ms.
                _ => {
                    for b in b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nX-Slow: "
                        .iter()
                        .cycle()
                    {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        s.write_all(&[*b]).await?;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            closed.fetch_add(1, Ordering::Relaxed);
            // Reconnect soon, but leave the test's own deliveries some CPU (2 cores here).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_deliveries_get_200_while_thousands_of_slow_clients_attack() {
    let _heavy = testkit::heavy().await;
    let ingest = start(&[("TIERFLOW_INGEST__SHUTDOWN_GRACE", "2s")]);
    let pid = ingest.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://{}/webhooks/shopify", ingest.public);
    // Warm up (and check the pipe works) before measuring the baseline.
    for n in 0..20 {
        let w = signed_order(n);
        let r = loadgen_post(&client, &url, &w).await;
        assert_eq!(r, 200);
    }
    let baseline = rss_mib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    // 1,100 body tricklers (more than the old in-flight bound of 1,024), 1,000 oversized heads,
    // 400 slowloris heads.
    for (kind, count) in [(0u8, 1100), (1, 1000), (2, 400)] {
        for _ in 0..count {
            attackers.push(tokio::spawn(attacker(
                kind,
                ingest.public.clone(),
                stop.clone(),
                closed.clone(),
            )));
        }
    }
    let attack_started = Instant::now();
    let mut peak = baseline;
    let mut statuses = Vec::new();
    let mut latencies = Vec::new();
    let mut n = 100;
    // The most connections held at once, sampled beside the deliveries: attackers are cut at
    // the header deadline and reconnect, so one sample at the end can land in a trough.
    let sampler = {
        let (client, admin, stop) = (client.clone(), ingest.admin.clone(), stop.clone());
        tokio::spawn(async move {
            let mut most = 0f64;
            while !stop.load(Ordering::Relaxed) {
                most = most.max(metric(&client, &admin, "tierflow_ingest_open_connections").await);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            most
        })
    };
    // 10 s of attack with a real delivery every 50 ms, each with Shopify's 5 s deadline.
    while attack_started.elapsed() < Duration::from_secs(10) {
        n += 1;
        let w = signed_order(n);
        let started = Instant::now();
        statuses.push(loadgen_post(&client, &url, &w).await);
        latencies.push(started.elapsed());
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(started.elapsed())).await;
    }
    stop.store(true, Ordering::Relaxed);
    let open_during = sampler.await.unwrap();
    for a in attackers {
        let _ = a.await;
    }
    // Let the server notice the closed connections.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mib(pid);
    let header_timeouts = metric(
        &client,
        &ingest.admin,
        "tierflow_ingest_connections_total{outcome=\"header_timeout\"}",
    )
    .await;
    let body_timeouts = metric(
        &client,
        &ingest.admin,
        "tierflow_ingest_requests_total{outcome=\"timeout\"",
    )
    .await;
    let overloaded = metric(
        &client,
        &ingest.admin,
        "tierflow_ingest_requests_total{outcome=\"overloaded\"",
    )
    .await;
    latencies.sort();
    println!(
        "hostile clients: {} real deliveries (latency p50 {:?}, max {:?}), {} non-200; open connections during attack (most at once) {open_during}; \
         attacker connections closed by the server {}; header timeouts {header_timeouts}, body timeouts {body_timeouts}; \
         RSS baseline {baseline:.0} MiB, peak {peak:.0} MiB, 3 s after {after:.0} MiB",
        statuses.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        statuses.iter().filter(|s| **s != 200).count(),
        closed.load(Ordering::Relaxed),
    );
    assert!(
        statuses.len() >= 20,
        "too few deliveries: {}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "real deliveries refused during the attack: {statuses:?}"
    );
    assert!(
        open_during >= 1000.0,
        "the attack did not take hold: {open_during}"
    );
    assert!(body_timeouts > 0.0, "no body deadline fired");
    assert!(header_timeouts > 0.0, "no header deadline fired");
    assert_eq!(overloaded, 0.0, "attackers took in-flight slots");
    assert!(
        peak < baseline + 256.0,
        "memory grew from {baseline:.0} MiB to {peak:.0} MiB under the attack"
    );
    assert!(
        after < baseline + 128.0,
        "memory stayed at {after:.0} MiB (baseline {baseline:.0}) after the attackers left"
    );
    drop(ingest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_within_the_grace_even_with_tricklers_connected() {
    let mut ingest = start(&[
        ("TIERFLOW_INGEST__SHUTDOWN_GRACE", "1s"),
        // Longer than the grace, so the grace is what ends these connections.
        ("TIERFLOW_INGEST__HEADER_READ_TIMEOUT", "2s"),
        ("TIERFLOW_INGEST__BODY_READ_TIMEOUT", "3s"),
        ("RUST_LOG", "warn"),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(attacker(
                0,
                ingest.public.clone(),
                stop.clone(),
                closed.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &ingest.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(status) = ingest.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM with a 1 s grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "exited {:?} after SIGTERM with 200 tricklers connected",
        sent.elapsed()
    );
    assert!(exit.success(), "exit status {exit}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut ingest.child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("connections still open after the shutdown grace"),
        "the grace did not end the shutdown: {log}"
    );
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
}

async fn loadgen_post(client: &reqwest::Client, url: &str, w: &loadgen::Webhook) -> u16 {
    let mut req = client.post(url).body(w.body.clone());
    for (k, v) in w.headers() {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_keep_their_slot() {
    use tokio::io::AsyncReadExt;
    let ingest = start(&[]);
    let mut s = TcpStream::connect(&ingest.public).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Nothing more is sent: the server must close the connection (header_read_timeout, 2 s by
    // default), not keep it open for as long as the client likes.
    let closed = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("an idle keep-alive connection stayed open 15 s");
    assert_eq!(closed.unwrap(), 0, "expected EOF");
}
