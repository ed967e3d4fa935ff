//! `okta-sim`: serve a simulated Okta org on a local port.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use okta_sim::{Bucket, Faults, OAuthClient, Seed, SimConfig};

/// An in-memory Okta Management API for tierflow's local runs, tests and benchmarks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8190")]
    listen: std::net::SocketAddr,
    /// JSON seed: {"groups":[{"name":..,"type":"OKTA_GROUP"}], "users":[{"login":..,"email":..,
    /// "groups":[..]}], "attributes":{"name":"number"}}.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Create these OKTA_GROUP groups (comma-separated) besides the seed's.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Create users c0@example.com … c{N-1}@example.com.
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// A valid SSWS API token (repeatable).
    #[arg(long = "api-token", default_value = "sim-token")]
    api_tokens: Vec<String>,
    /// An OAuth service app: CLIENT_ID=PUBLIC_KEY_PEM_FILE (repeatable).
    #[arg(long = "oauth-client")]
    oauth_clients: Vec<String>,
    /// Rate-limit window (Okta: 1m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// A bucket's limit per window: BUCKET=N with BUCKET one of users_get, users_search,
    /// users_update, groups, token (repeatable; unlisted buckets get Okta's typical limits).
    #[arg(long = "limit")]
    limits: Vec<String>,
    /// Concurrent requests allowed.
    #[arg(long, default_value_t = 75)]
    max_concurrency: usize,
    /// Share of requests answered 500/503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of membership changes answered 409 E0000112.
    #[arg(long, default_value_t = 0.0)]
    conflict_rate: f64,
    /// Latency added to every request.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Share of requests that hang for --timeout, then 504.
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut seed: Seed = match &args.seed {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading seed {}", p.display()))?,
        )
        .with_context(|| format!("parsing seed {}", p.display()))?,
        None => Seed::default(),
    };
    for g in &args.groups {
        if !seed.groups.iter().any(|s| &s.name == g) {
            seed.groups.push(okta_sim::SeedGroup {
                name: g.clone(),
                group_type: "OKTA_GROUP".into(),
                description: None,
            });
        }
    }
    for i in 0..args.users {
        let login = format!("c{i}@example.com");
        seed.users.push(okta_sim::SeedUser {
            email: Some(login.clone()),
            login,
            ..Default::default()
        });
    }
    let mut limits = BTreeMap::new();
    for l in &args.limits {
        let (b, n) = l
            .split_once('=')
            .context("--limit takes BUCKET=N, e.g. users_update=600")?;
        let bucket = Bucket::parse(b).with_context(|| {
            format!("--limit: unknown bucket `{b}`; use users_get, users_search, users_update, groups or token")
        })?;
        limits.insert(
            bucket,
            n.parse().context("--limit: N must be a whole number")?,
        );
    }
    let mut oauth_clients = Vec::new();
    for c in &args.oauth_clients {
        let (id, file) = c
            .split_once('=')
            .context("--oauth-client takes CLIENT_ID=PUBLIC_KEY_PEM_FILE")?;
        oauth_clients.push(OAuthClient {
            client_id: id.to_owned(),
            public_key_pem: std::fs::read_to_string(file)
                .with_context(|| format!("reading public key {file}"))?,
        });
    }
    let config = SimConfig {
        api_tokens: args.api_tokens.clone(),
        oauth_clients,
        window: args.window,
        limits,
        max_concurrency: args.max_concurrency,
        faults: Faults {
            error_rate: args.error_rate,
            conflict_rate: args.conflict_rate,
            latency: args.latency,
            timeout_rate: args.timeout_rate,
            timeout: args.timeout,
        },
        ..SimConfig::default()
    };
    let shared = okta_sim::Shared::new(config, &seed).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("okta-sim listening on http://{}", listener.local_addr()?);
        axum::serve(listener, okta_sim::api::router(shared))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
