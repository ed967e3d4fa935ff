//! `shopify-sim`: serve a simulated shop's Admin GraphQL API on a loopback port.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shopify_sim::{AccessToken, SimConfig, SimHandle, SimOrder};

/// An in-memory Shopify Admin GraphQL API (orders and bulk operations) for tierflow's local
/// runs and tests. Loopback only: it has no real authentication.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8290")]
    listen: std::net::SocketAddr,
    /// The shop's domain.
    #[arg(long, default_value = "tierflow-dev.myshopify.com")]
    shop: String,
    /// A valid access token (repeatable); it gets `read_orders` and `read_all_orders`.
    #[arg(long = "access-token", default_value = "shpat_sim")]
    tokens: Vec<String>,
    /// A token without `read_all_orders` (sees the last 60 days of orders only).
    #[arg(long = "recent-only-token")]
    recent_only_tokens: Vec<String>,
    /// Orders to serve: a JSON array of orders (`GET /__sim/orders` prints the shape).
    #[arg(long)]
    orders: Option<PathBuf>,
    /// How long a bulk operation runs.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    bulk_duration: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut config = SimConfig::new(&args.shop, "unused");
    config.tokens = args
        .tokens
        .iter()
        .map(|t| AccessToken {
            token: t.clone(),
            scopes: vec!["read_orders".into(), "read_all_orders".into()],
        })
        .chain(args.recent_only_tokens.iter().map(|t| AccessToken {
            token: t.clone(),
            scopes: vec!["read_orders".into()],
        }))
        .collect();
    config.bulk_duration = args.bulk_duration;
    let sim = SimHandle::start_on(config, args.listen).await?;
    if let Some(path) = &args.orders {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let orders: Vec<SimOrder> = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a JSON array of orders", path.display()))?;
        sim.upsert_orders(orders);
    }
    println!(
        "shopify-sim for {} on {} (Admin API {}: POST /admin/api/{}/graphql.json)",
        args.shop,
        sim.base_url(),
        shopify_sim::schema::API_VERSION,
        shopify_sim::schema::API_VERSION
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
