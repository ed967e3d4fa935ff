//! `ingest`: run the webhook receiver, or `ingest backfill` a shop's order history.
//! `--check-config` validates the config and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a shop's order history from a Shopify bulk operation into the orders topic
    /// (dry run unless --execute). Needs [shopify.shops."<shop>"] admin_access_token.
    Backfill {
        /// The shop's *.myshopify.com domain.
        #[arg(long)]
        shop: String,
        /// Only orders updated at or after this date (2024-01-31) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Publish (without it: report what would be published, nothing is written to Kafka).
        #[arg(long)]
        execute: bool,
        /// Where the checkpoint lives (operation id, lines published), for resuming.
        #[arg(long, env = "TIERFLOW_STATE_DIR", default_value = "tierflow-state")]
        state_dir: PathBuf,
        /// How often the bulk operation's status is polled.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Proceed although the app lacks read_all_orders (Shopify then shows 60 days only).
        #[arg(long = "accept-60-days")]
        accept_recent_only: bool,
        /// Orders published and acknowledged between checkpoints.
        #[arg(long, default_value_t = 500)]
        chunk: usize,
    },
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
    match cli.command {
        None => service_runtime::run_service("ingest", run(settings)),
        Some(Command::Backfill {
            shop,
            since,
            execute,
            state_dir,
            poll_interval,
            accept_recent_only,
            chunk,
        }) => service_runtime::run_service("ingest backfill", async move {
            let _telemetry =
                service_runtime::telemetry::init("ingest", settings.telemetry.log_format)?;
            let since = since
                .as_deref()
                .map(ingest::backfill::parse_since)
                .transpose()?;
            anyhow::ensure!(chunk > 0, "--chunk must be at least 1");
            let bootstrap = match settings.kafka.brokers()? {
                service_runtime::config::Brokers::External(list) => Some(list),
                service_runtime::config::Brokers::Embedded if execute => anyhow::bail!(
                    "--execute needs a real broker (an embedded one would lose the records when this command ends): pass --brokers"
                ),
                service_runtime::config::Brokers::Embedded => None,
            };
            let args = ingest::backfill::BackfillArgs {
                shop,
                since,
                execute,
                state_dir,
                poll_interval,
                accept_recent_only,
                chunk,
                progress: true,
            };
            let summary = ingest::backfill::run(&settings, bootstrap.as_deref(), &args).await?;
            println!("{}", ingest::backfill::report(&summary, execute));
            Ok(())
        }),
    }
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
