//! `ingest`: run the webhook receiver. `--check-config` validates the config and exits.

use std::process::ExitCode;

use clap::Parser;
use ingest::config::Settings;
use ingest::Application;

// glibc malloc spent ~10% of the CPU on the request path (8 KB bodies freed on other threads);
// mimalloc's thread-local free lists cut that (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Verifies Shopify webhooks and publishes them to Kafka.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    service: service_runtime::ServiceArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings: Settings = match cli.service.load("ingest") {
        Ok(s) => s,
        Err(code) => return code,
    };
    if cli.service.check_config {
        println!("ingest: config is valid");
        return ExitCode::SUCCESS;
    }
    service_runtime::run_service("ingest", run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = service_runtime::telemetry::init("ingest", settings.telemetry.log_format)?;
    // The embedded broker must outlive the application, and stays on this thread (it is !Send).
    let (bootstrap, _embedded) =
        service_runtime::kafka::resolve_brokers(&settings.kafka, &settings.topics, "ingest")?;
    let app = Application::build(&settings, &bootstrap).await?;
    tracing::info!(listen = %app.local_addr(), admin = %app.admin_addr(), brokers = %bootstrap, "ingest listening");
    println!(
        "ingest listening on http://{} (webhooks: POST /webhooks/shopify), admin on http://{}/metrics",
        app.local_addr(),
        app.admin_addr()
    );
    app.run_until(service_runtime::shutdown::signal()).await
}
