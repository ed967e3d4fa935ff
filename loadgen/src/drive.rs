//! Driving an endpoint with signed webhooks over persistent HTTP/1.1 connections.
//!
//! The client is a deliberately small HTTP/1.1 loop (one request in flight per connection,
//! `Content-Length` bodies, responses parsed by `httparse`): a general client's per-request
//! machinery (header maps, a dispatcher task and channel per connection) cost this generator
//! about twice the CPU per request of `wrk`, and it shares two cores with what it measures.
//!
//! Closed loop by default (each connection sends its next request when the previous answer
//! arrives: measures capacity); with a target rate, open loop per connection, and latency is
//! measured from when a request was *due*, not when it was sent, so a stalled server cannot hide
//! its queueing delay (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::io::Write as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::payload::{order_body, OrderStream};
use crate::{sign, API_VERSION};

#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// `host:port` to connect to.
    pub addr: String,
    /// Request path, e.g. `/webhooks/shopify`.
    pub path: String,
    pub secret: Vec<u8>,
    pub shop: String,
    pub topics: Vec<String>,
    pub connections: usize,
    pub duration: Duration,
    /// Requests in this leading period are sent but not measured.
    pub warmup: Duration,
    /// Total requests per second across all connections; `None` for as fast as answered.
    pub rate: Option<f64>,
    pub customers: u64,
    /// Distinct pre-rendered bodies cycled through (rendering is kept off the hot path).
    pub bodies: usize,
    pub seed: u64,
}

#[derive(Debug)]
pub struct Report {
    pub measured: Duration,
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    /// Latency in microseconds of measured requests.
    pub latency_us: Histogram<u64>,
    pub body_bytes_mean: usize,
}

impl Report {
    pub fn completed(&self) -> u64 {
        self.by_status.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn throughput(&self) -> f64 {
        self.completed() as f64 / self.measured.as_secs_f64()
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds": self.measured.as_secs_f64(),
            "requests": self.completed(),
            "ok": self.ok(),
            "requests_per_sec": self.throughput(),
            "ok_per_sec": self.ok() as f64 / self.measured.as_secs_f64(),
            "p50_ms": self.percentile_ms(0.50),
            "p90_ms": self.percentile_ms(0.90),
            "p99_ms": self.percentile_ms(0.99),
            "p999_ms": self.percentile_ms(0.999),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "by_status": self.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "transport_errors": self.transport_errors,
            "body_bytes_mean": self.body_bytes_mean,
        })
    }
}

/// A pre-rendered request: everything but the webhook id header, which is unique per request.
struct Prepared {
    head: Vec<u8>,
    body: Bytes,
}

/// Run the load and report what came back.
pub async fn drive(cfg: DriveConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.connections > 0, "need at least one connection");
    anyhow::ensure!(!cfg.topics.is_empty(), "need at least one topic");
    let pool: Vec<Prepared> = OrderStream::new(cfg.seed, cfg.customers)
        .take(cfg.bodies.max(1))
        .enumerate()
        .map(|(i, spec)| {
            let body = Bytes::from(order_body(&spec, &cfg.shop));
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
                 x-shopify-topic: {topic}\r\nx-shopify-hmac-sha256: {hmac}\r\n\
                 x-shopify-shop-domain: {shop}\r\nx-shopify-api-version: {API_VERSION}\r\n\
                 x-shopify-triggered-at: 2026-11-22T04:00:00.000Z\r\ncontent-length: {len}\r\n",
                path = cfg.path,
                host = cfg.addr,
                topic = cfg.topics[i % cfg.topics.len()],
                hmac = sign(&cfg.secret, &body),
                shop = cfg.shop,
                len = body.len(),
            );
            Prepared {
                head: head.into_bytes(),
                body,
            }
        })
        .collect();
    let body_bytes_mean = pool.iter().map(|p| p.body.len()).sum::<usize>() / pool.len();
    let pool = Arc::new(pool);
    let cfg = Arc::new(cfg);
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    let run_id: u32 = rand::random();

    let mut workers = Vec::with_capacity(cfg.connections);
    for worker in 0..cfg.connections {
        let (cfg, pool) = (cfg.clone(), pool.clone());
        workers.push(tokio::spawn(async move {
            connection_loop(worker, run_id, &cfg, &pool, start, measure_from, end).await
        }));
    }
    let mut report = Report {
        measured: cfg.duration,
        by_status: BTreeMap::new(),
        transport_errors: 0,
        latency_us: new_histogram(),
        body_bytes_mean,
    };
    for w in workers {
        let part = w.await.context("worker panicked")?;
        for (s, n) in part.by_status {
            *report.by_status.entry(s).or_default() += n;
        }
        report.transport_errors += part.transport_errors;
        report.latency_us.add(&part.latency_us)?;
    }
    Ok(report)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid")
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send one request, read one response; returns its status and whether the server is
    /// closing the connection.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, bool)> {
        use std::io::{Error, ErrorKind};
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            let mut headers = [httparse::EMPTY_HEADER; 24];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => continue,
                Err(e) => return Err(Error::new(ErrorKind::InvalidData, e)),
            };
            let status = response.code.unwrap_or(0);
            let mut content_length = 0usize;
            let mut close = false;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    content_length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "bad content-length"))?;
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(Error::new(
                        ErrorKind::InvalidData,
                        "chunked responses are not supported",
                    ));
                } else if h.name.eq_ignore_ascii_case("connection") {
                    close = h.value.eq_ignore_ascii_case(b"close");
                }
            }
            while self.buf.len() < head_len + content_length {
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "response body cut short",
                    ));
                }
            }
            return Ok((status, close));
        }
    }
}

async fn connection_loop(
    worker: usize,
    run_id: u32,
    cfg: &DriveConfig,
    pool: &[Prepared],
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Report {
    let mut part = Report {
        measured: cfg.duration,
        by_status: BTreeMap::new(),
        transport_errors: 0,
        latency_us: new_histogram(),
        body_bytes_mean: 0,
    };
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    // Stagger open-loop senders so they do not fire in lockstep.
    let mut due = start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(worker as f64 / cfg.connections as f64)
        });
    let mut conn: Option<Conn> = None;
    let mut seq: u64 = 0;
    let mut request = Vec::with_capacity(16 * 1024);
    while Instant::now() < end {
        if interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
            if Instant::now() >= end {
                break;
            }
        } else {
            due = Instant::now();
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&cfg.addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    part.transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let p = &pool[(worker + seq as usize * cfg.connections) % pool.len()];
        seq += 1;
        request.clear();
        request.extend_from_slice(&p.head);
        write!(
            request,
            "x-shopify-webhook-id: lg-{run_id:08x}-{worker}-{seq}\r\n\r\n"
        )
        .expect("writing to a Vec cannot fail");
        request.extend_from_slice(&p.body);
        let result = c.exchange(&request).await;
        let done = Instant::now();
        match result {
            Ok((status, close)) => {
                if due >= measure_from && done <= end {
                    *part.by_status.entry(status).or_default() += 1;
                    let us =
                        u64::try_from(done.duration_since(due).as_micros()).unwrap_or(u64::MAX);
                    part.latency_us.saturating_record(us.max(1));
                }
                if close {
                    conn = None;
                }
            }
            Err(_) => {
                part.transport_errors += 1;
                conn = None;
            }
        }
        if let Some(i) = interval {
            due += i;
        }
    }
    part
}
