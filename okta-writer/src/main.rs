//! `okta-writer`: run the Okta writer, or (`groups`, `dlq list`, `dlq redrive`, `rules`,
//! `reconcile`) look at Okta and the dead-letter topic, set up group rules, and heal drift.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use okta_writer::config::Settings;
use okta_writer::dlq::Filter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Applies customer segment updates to Okta profiles and tier groups.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    service: service_runtime::ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Resolve every tier's Okta group and print name, id and member count.
    Groups,
    /// Inspect or redrive the dead-letter topic.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Make Okta's group rules match the tier table (one per store and tier), for
    /// [okta] group_assignment = "rules". A dry run unless --execute.
    Rules {
        /// Show the plan only (the default).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
        #[arg(long)]
        execute: bool,
    },
    /// Compare Okta's tier groups and attributes with the customers' current state (the
    /// segments topic) and report the drift; heal it with --execute.
    Reconcile(ReconcileArgs),
}

#[derive(Debug, clap::Args)]
struct ReconcileArgs {
    /// Report only (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Heal: apply each drifted customer's newest update, trusting nothing.
    #[arg(long)]
    execute: bool,
    /// With --execute, also remove users who are in a tier group without being a customer of
    /// its store (by default they are only reported).
    #[arg(long, requires = "execute")]
    remove_unknown: bool,
    /// Share of each Okta rate-limit bucket the reconciler may use; must be below
    /// [okta] rate_limit_share so live updates keep the larger part.
    #[arg(long, default_value_t = 0.1)]
    rate_limit_share: f64,
    /// Periodic mode: run again this long after each run ends (e.g. `1h`), serving
    /// tierflow_okta_reconcile_* metrics on --admin-listen.
    #[arg(long, value_parser = humantime::parse_duration)]
    every: Option<Duration>,
    /// Periodic mode's /metrics listener.
    #[arg(long, default_value = "127.0.0.1:9093")]
    admin_listen: SocketAddr,
}

#[derive(Debug, clap::Args)]
struct FilterArgs {
    /// Only entries with this reason (repeatable), e.g. missing_user, okta_rejected.
    #[arg(long = "reason")]
    reasons: Vec<String>,
    /// Only entries that last failed at least this long ago, e.g. `10m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Only entries that last failed at most this long ago, e.g. `2h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    newer_than: Option<Duration>,
    /// At most this many entries (oldest first).
    #[arg(long)]
    limit: Option<usize>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            reasons: self.reasons.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            limit: self.limit,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Summarise open entries by reason and age, and show some of them.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many entries to show after the summary.
        #[arg(long, default_value_t = 20)]
        show: usize,
    },
    /// Re-apply selected open entries to Okta and record each outcome on the topic. A dry run
    /// (nothing applied or recorded) unless --execute.
    Redrive {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show what would be redriven (the default).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
        #[arg(long)]
        execute: bool,
        /// Entries applied per second at most (Okta's own limits apply too).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings: Settings = match cli.service.load("okta-writer") {
        Ok(s) => s,
        Err(code) => return code,
    };
    if cli.service.check_config {
        println!("okta-writer: config is valid");
        // What each store will write, so an operator can check the suffixes before Okta does.
        if let Ok(stores) = settings.stores() {
            for s in stores {
                let attributes: Vec<&str> = s.attributes.names().collect();
                let groups: Vec<&str> = s.groups.iter().map(|g| g.name.as_str()).collect();
                println!(
                    "store {}: attributes {}; tier groups {}",
                    s.shop,
                    attributes.join(", "),
                    groups.join(", ")
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    service_runtime::run_service("okta-writer", async move {
        let _telemetry =
            service_runtime::telemetry::init("okta-writer", settings.telemetry.log_format)?;
        match cli.command {
            None => run(settings).await,
            Some(Command::Groups) => {
                print!("{}", okta_writer::groups_table(&settings).await?);
                Ok(())
            }
            Some(Command::Dlq(cmd)) => dlq(settings, cmd).await,
            Some(Command::Reconcile(args)) => reconcile(settings, args).await,
            Some(Command::Rules {
                dry_run: _,
                execute,
            }) => {
                let applier =
                    okta_writer::applier(&settings, okta_writer::metrics::Metrics::unregistered())
                        .await?;
                print!(
                    "{}",
                    okta_writer::rules::sync(&applier.client, &applier.stores, execute).await?
                );
                Ok(())
            }
        }
    })
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // The embedded broker must outlive the service, and stays on this thread (it is !Send).
    let (bootstrap, _embedded) =
        service_runtime::kafka::resolve_brokers(&settings.kafka, &settings.topics, "okta-writer")?;
    okta_writer::Application::build(&settings, &bootstrap)
        .await?
        .run_until(service_runtime::shutdown::signal())
        .await
}

async fn dlq(settings: Settings, cmd: DlqCommand) -> anyhow::Result<()> {
    let bootstrap = settings.kafka.existing_brokers(
        "this command works on an existing dead-letter topic: point --brokers at the broker that holds it (for the embedded broker, the address the service printed)",
    )?;
    match cmd {
        DlqCommand::List { filter, show } => {
            let filter = filter.filter();
            let out = tokio::task::spawn_blocking(move || {
                okta_writer::dlq::list(&settings, &bootstrap, &filter, show)
            })
            .await??;
            print!("{out}");
        }
        DlqCommand::Redrive {
            filter,
            dry_run: _,
            execute,
            rate,
        } => {
            let metrics = okta_writer::metrics::Metrics::unregistered();
            let applier = okta_writer::applier(&settings, metrics).await?;
            let results = okta_writer::dlq::redrive(
                &settings,
                &bootstrap,
                &applier,
                &filter.filter(),
                execute,
                rate,
            )
            .await
            .context("redriving dead letters")?;
            print!("{}", okta_writer::dlq::redrive_report(&results, execute));
        }
    }
    Ok(())
}

async fn reconcile(mut settings: Settings, args: ReconcileArgs) -> anyhow::Result<()> {
    use okta_writer::reconcile::{self, Options, ReconcileMetrics};
    let bootstrap = settings.kafka.existing_brokers(
        "reconcile reads the customers' state from the segments topic: point --brokers at the cluster that holds it",
    )?;
    let live_share = settings.okta.rate_limit_share;
    anyhow::ensure!(
        args.rate_limit_share > 0.0 && args.rate_limit_share < live_share,
        "--rate-limit-share {} must be above 0 and below [okta] rate_limit_share ({live_share}), so live updates keep the larger part of each bucket",
        args.rate_limit_share
    );
    settings.okta.rate_limit_share = args.rate_limit_share;
    let metrics = okta_writer::metrics::Metrics::unregistered();
    let applier = okta_writer::applier(&settings, metrics.clone()).await?;
    let options = Options {
        execute: args.execute,
        remove_unknown: args.remove_unknown,
    };
    let Some(every) = args.every else {
        let report = reconcile::run(&settings, &bootstrap, &applier, &metrics, options).await?;
        print!("{}", report.render());
        return Ok(());
    };
    let registry = service_runtime::admin::registry("okta-writer-reconcile");
    let recorded = ReconcileMetrics::register(&registry).context("registering metrics")?;
    let admin =
        service_runtime::admin::AdminServer::start(args.admin_listen, "--admin-listen", registry)
            .await?;
    tracing::info!(admin = %admin.addr, ?every, execute = args.execute, "periodic reconcile running");
    let shutdown = service_runtime::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        let outcome = reconcile::run(&settings, &bootstrap, &applier, &metrics, options).await;
        recorded.record(&outcome);
        match &outcome {
            Ok(r) => tracing::info!(report = %r.render(), "reconcile run done"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), retry_in = ?every, "reconcile run failed")
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    admin.stop().await
}
