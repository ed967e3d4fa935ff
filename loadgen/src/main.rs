//! `loadgen`: send realistic signed Shopify order webhooks at an endpoint and report
//! throughput, latency percentiles and counts by status.

use std::time::Duration;

use clap::Parser;
use loadgen::drive::{drive, DriveConfig};

// The generator shares the box with what it measures: keep its allocator cheap too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator for tierflow's ingest: signed, Shopify-shaped order webhooks"
)]
struct Cli {
    /// Webhook endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/shopify")]
    url: String,
    /// Signing secret (must be one the ingest accepts).
    #[arg(long, env = "LOADGEN_SECRET", hide_env_values = true)]
    secret: String,
    /// Shop domain sent in X-Shopify-Shop-Domain.
    #[arg(long, default_value = "tierflow-dev.myshopify.com")]
    shop: String,
    /// Comma-separated Shopify topics, cycled.
    #[arg(
        long,
        default_value = "orders/create,orders/updated,orders/paid",
        value_delimiter = ','
    )]
    topics: Vec<String>,
    /// Concurrent HTTP/1.1 connections.
    #[arg(long, short = 'c', default_value_t = 256)]
    connections: usize,
    /// Measured duration, e.g. `20s`.
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s", value_parser = humantime_duration)]
    warmup: Duration,
    /// Target requests/s over all connections (open loop); omit for as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct customers the orders spread over.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// Distinct pre-rendered bodies.
    #[arg(long, default_value_t = 1024)]
    bodies: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runtime threads; 1 (the default) keeps the generator to one core, like `wrk -t1`.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Write one signed sample to DIR/body.json and DIR/body.sig and exit (for wrk or curl).
    #[arg(long, value_name = "DIR")]
    emit_sample: Option<std::path::PathBuf>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    s.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.emit_sample {
        let spec = loadgen::payload::OrderStream::new(cli.seed, cli.customers)
            .next()
            .expect("the stream is endless");
        let body = loadgen::payload::order_body(&spec, &cli.shop);
        std::fs::write(dir.join("body.json"), &body)?;
        std::fs::write(
            dir.join("body.sig"),
            loadgen::sign(cli.secret.as_bytes(), &body) + "\n",
        )?;
        println!(
            "wrote {} ({} bytes) and body.sig",
            dir.join("body.json").display(),
            body.len()
        );
        return Ok(());
    }
    let uri: http::Uri = cli.url.parse()?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs are supported"
    );
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("URL has no host"))?;
    let addr = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let cfg = DriveConfig {
        addr,
        path: uri.path().to_owned(),
        secret: cli.secret.into_bytes(),
        shop: cli.shop,
        topics: cli.topics,
        connections: cli.connections,
        duration: cli.duration,
        warmup: cli.warmup,
        rate: cli.rate,
        customers: cli.customers,
        bodies: cli.bodies,
        seed: cli.seed,
    };
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    let report = rt.block_on(drive(cfg))?;
    if cli.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    println!(
        "{} requests in {:.1}s: {:.0} req/s ({:.0} 2xx/s), bodies {} B mean",
        report.completed(),
        report.measured.as_secs_f64(),
        report.throughput(),
        report.ok() as f64 / report.measured.as_secs_f64(),
        report.body_bytes_mean
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        report.percentile_ms(0.5),
        report.percentile_ms(0.9),
        report.percentile_ms(0.99),
        report.percentile_ms(0.999),
        report.latency_us.max() as f64 / 1000.0
    );
    let statuses: Vec<String> = report
        .by_status
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!(
        "status: {}  transport errors: {}",
        statuses.join(", "),
        report.transport_errors
    );
    Ok(())
}
