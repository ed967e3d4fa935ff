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
        #[arg(long, conflicts_with = "cancel")]
        execute: bool,
        /// Cancel the bulk operation of this shop's checkpoint at Shopify and forget it.
        #[arg(long)]
        cancel: bool,
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
        /// How long to wait for the segmenter to consume the backfill before reading the
        /// customers' tiers after it, for the summary (0: no tier report).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        tiers_wait: Duration,
    },
    /// Sweep the orders updated since the last sweep (minus an overlap) and publish them, so
    /// versions whose webhook never arrived reach the segmenter (dry run unless --execute).
    Reconcile {
        #[arg(long)]
        shop: String,
        /// Where the first sweep starts (later ones start at the watermark).
        #[arg(long)]
        since: Option<String>,
        /// Each sweep starts this long before the watermark (updates committed late).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        overlap: Duration,
        #[arg(long)]
        execute: bool,
        #[arg(long, env = "TIERFLOW_STATE_DIR", default_value = "tierflow-state")]
        state_dir: PathBuf,
        /// Sweep again every this long (with --execute), serving metrics on --admin-listen.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        #[arg(long, default_value = "127.0.0.1:9094")]
        admin_listen: std::net::SocketAddr,
        /// Also check that the shop has a webhook subscription for every accepted topic
        /// (subscriptions made through the Admin API; app-configuration ones are not listed).
        #[arg(long)]
        check_subscriptions: bool,
        /// A window with more orders than this is read with one bulk operation, not pages.
        #[arg(long, default_value_t = 2500)]
        bulk_above: u64,
        /// How often that bulk operation's status is polled.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
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
            cancel,
            state_dir,
            poll_interval,
            accept_recent_only,
            chunk,
            tiers_wait,
        }) => service_runtime::run_service("ingest backfill", async move {
            let _telemetry =
                service_runtime::telemetry::init("ingest", settings.telemetry.log_format)?;
            let since = since
                .as_deref()
                .map(ingest::backfill::parse_since)
                .transpose()?;
            if cancel {
                println!(
                    "{}",
                    ingest::backfill::cancel(&settings, &shop, &state_dir).await?
                );
                return Ok(());
            }
            anyhow::ensure!(chunk > 0, "--chunk must be at least 1");
            let bootstrap = command_brokers(&settings, execute)?;
            let args = ingest::backfill::BackfillArgs {
                shop,
                since,
                execute,
                state_dir,
                poll_interval,
                accept_recent_only,
                chunk,
                progress: true,
                tiers_wait: (!tiers_wait.is_zero()).then_some(tiers_wait),
            };
            let summary = ingest::backfill::run(&settings, bootstrap.as_deref(), &args).await?;
            println!("{}", ingest::backfill::report(&summary, execute));
            Ok(())
        }),
        Some(Command::Reconcile {
            shop,
            since,
            overlap,
            execute,
            state_dir,
            every,
            admin_listen,
            check_subscriptions,
            bulk_above,
            poll_interval,
        }) => service_runtime::run_service("ingest reconcile", async move {
            let _telemetry =
                service_runtime::telemetry::init("ingest", settings.telemetry.log_format)?;
            anyhow::ensure!(
                every.is_none() || execute,
                "--every sweeps periodically and needs --execute (a periodic dry run changes nothing)"
            );
            let bootstrap = command_brokers(&settings, execute)?;
            let args = ingest::reconcile::ReconcileArgs {
                shop: shop.clone(),
                since,
                overlap,
                execute,
                state_dir,
                check_subscriptions,
                bulk_above,
                poll_interval,
            };
            let client = ingest::admin_api::AdminClient::new(settings.admin_api(&shop)?)?;
            let Some(every) = every else {
                let s = ingest::reconcile::sweep(&settings, bootstrap.as_deref(), &args, &client)
                    .await?;
                println!("{}", ingest::reconcile::report(&s, execute));
                return Ok(());
            };
            let registry = service_runtime::admin::registry("ingest-reconcile");
            let metrics = ingest::reconcile::Metrics::register(&registry)?;
            let listener = tokio::net::TcpListener::bind(admin_listen).await?;
            println!(
                "ingest reconcile: metrics on http://{admin_listen}/metrics, a sweep every {}",
                humantime::format_duration(every)
            );
            let shutdown = service_runtime::shutdown::signal();
            tokio::pin!(shutdown);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let admin = tokio::spawn(service_runtime::admin::serve(
                listener,
                service_runtime::admin::router(registry),
                async move {
                    let _ = stop_rx.await;
                },
            ));
            loop {
                let result =
                    ingest::reconcile::sweep(&settings, bootstrap.as_deref(), &args, &client).await;
                let checked = if check_subscriptions {
                    settings.ingest.topics.as_slice()
                } else {
                    &[]
                };
                metrics.record(&result, checked);
                match &result {
                    Ok(s) => {
                        tracing::info!(report = %ingest::reconcile::report(s, true), "reconcile sweep done")
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "reconcile sweep failed; the watermark stays, the next sweep covers the window again")
                    }
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
            let _ = stop_tx.send(());
            admin.await??;
            Ok(())
        }),
    }
}

/// The brokers a command publishes to: the configured ones; an embedded broker only for a dry
/// run (it would lose the records when the command ends).
fn command_brokers(settings: &Settings, execute: bool) -> anyhow::Result<Option<String>> {
    Ok(match settings.kafka.brokers()? {
        service_runtime::config::Brokers::External(list) => Some(list),
        service_runtime::config::Brokers::Embedded if execute => anyhow::bail!(
            "--execute needs a real broker (an embedded one would lose the records when this command ends): pass --brokers"
        ),
        service_runtime::config::Brokers::Embedded => None,
    })
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
