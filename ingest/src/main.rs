//! `ingest`: run the webhook receiver. `--check-config` validates the config and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ingest::config::Settings;
use ingest::Application;
use service_runtime::config::Brokers;
use service_runtime::kafka::EmbeddedBroker;

// glibc malloc spent ~10% of the CPU on the request path (8 KB bodies freed on other threads);
// mimalloc's thread-local free lists cut that (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Verifies Shopify webhooks and publishes them to Kafka.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The pipeline's TOML config file.
    #[arg(long, env = "TIERFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers, or `embedded` for the in-process dev broker; overrides [kafka] brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Validate the config and exit (0 if valid, 2 if not).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(
        cli.config.as_deref(),
        service_runtime::config::process_env(),
        cli.brokers,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ingest: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("ingest: config is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = service_runtime::telemetry::init("ingest", settings.telemetry.log_format)?;
    // The embedded broker must outlive the application, and stays on this thread (it is !Send).
    let (bootstrap, _embedded) = match settings.kafka.brokers()? {
        Brokers::External(list) => (list, None),
        Brokers::Embedded => {
            let broker = EmbeddedBroker::start_pipeline(&settings.topics, 6)?;
            let bootstrap = broker.bootstrap_servers();
            tracing::warn!(%bootstrap, "using the embedded in-process Kafka broker: records live in memory only and are lost when ingest stops");
            println!("embedded Kafka broker: {bootstrap}");
            (bootstrap, Some(broker))
        }
    };
    let app = Application::build(&settings, &bootstrap).await?;
    tracing::info!(listen = %app.local_addr(), admin = %app.admin_addr(), brokers = %bootstrap, "ingest listening");
    println!(
        "ingest listening on http://{} (webhooks: POST /webhooks/shopify), admin on http://{}/metrics",
        app.local_addr(),
        app.admin_addr()
    );
    app.run_until(service_runtime::shutdown::signal()).await
}
