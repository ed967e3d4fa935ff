//! The benchmark baseline: the least a webhook receiver can do and still be correct —
//! axum, one HMAC check, the record key, an idempotent `acks=all` produce to the embedded
//! broker, 200 after the ack. No config, metrics, headers, tracing, limits or quarantine.
//! `bench/ingest.py` runs it beside the real ingest so BENCHMARKS.md can quote a ratio.
//!
//! Usage: `bare_floor LISTEN_ADDR SECRET [COMPRESSION [BROKERS]]`: without BROKERS it starts
//! the embedded broker; with them it produces to `shopify.orders` there (which must exist).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sha2::Sha256;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    mac: Hmac<Sha256>,
    producer: FutureProducer,
}

async fn receive(State(f): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(sig), Some(shop), Some(topic)) = (
        header("x-shopify-hmac-sha256"),
        header("x-shopify-shop-domain"),
        header("x-shopify-topic"),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(sig) else {
        return StatusCode::UNAUTHORIZED;
    };
    let mut mac = f.mac.clone();
    mac.update(&body);
    if mac.verify_slice(&tag).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(topic) = topic.parse() else {
        return StatusCode::OK;
    };
    let Ok(key) = schemas::record_key(shop, topic, &body) else {
        return StatusCode::OK;
    };
    let key = key.to_string();
    let record = FutureRecord::to("shopify.orders")
        .key(&key)
        .payload(&body[..]);
    match f.producer.send(record, Duration::from_secs(3)).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let secret = args.next().unwrap_or_else(|| "dev-secret".into());
    // Third argument: the producer's compression.type (`none` by default), so the benchmark
    // can price compression on the floor itself.
    let compression = args.next().unwrap_or_else(|| "none".into());
    let (bootstrap, broker) = match args.next() {
        Some(brokers) => (brokers, None),
        None => {
            let b = service_runtime::kafka::EmbeddedBroker::start(&["shopify.orders"], 6)?;
            (b.bootstrap_servers(), Some(b))
        }
    };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", &compression)
        .create()?;
    let floor = Arc::new(Floor {
        mac: Hmac::new_from_slice(secret.as_bytes())?,
        producer,
    });
    let app = Router::new()
        .route("/webhooks/shopify", post(receive))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bare floor listening on {listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(service_runtime::shutdown::signal())
        .await?;
    drop(broker);
    Ok(())
}
