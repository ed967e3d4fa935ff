//! `segmenter`: run the segmenter service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use segmenter::config::Settings;
use service_runtime::config::Brokers;
use service_runtime::kafka::EmbeddedBroker;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Recomputes per-customer spend from order events and emits tier changes.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The pipeline's TOML config file.
    #[arg(long, env = "TIERFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers, or `embedded`; overrides [kafka] brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Validate the config and exit (0 if valid, 2 if not).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Replay the orders topic under another tier table, emit nothing, and print how many
    /// customers would move from each tier to each other tier.
    Whatif {
        /// A TOML file with `[[tiers]]` rows (and optionally `[spend]`).
        #[arg(long)]
        tiers: PathBuf,
        /// Also write the customers who would move, as CSV (`*.csv`) or JSON.
        #[arg(long, value_name = "PATH")]
        movers: Option<PathBuf>,
    },
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
            eprintln!("segmenter: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!(
            "segmenter: config is valid (rule version {})",
            settings
                .rules()
                .map(|r| r.version().to_owned())
                .unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Whatif { tiers, movers }) = &cli.command {
        return match whatif(&settings, tiers, movers.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("segmenter whatif: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("segmenter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("segmenter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = service_runtime::telemetry::init("segmenter", settings.telemetry.log_format)?;
    let (bootstrap, _embedded) = match settings.kafka.brokers()? {
        Brokers::External(list) => (list, None),
        Brokers::Embedded => {
            let broker = EmbeddedBroker::start_pipeline(&settings.topics, 6)?;
            let bootstrap = broker.bootstrap_servers();
            tracing::warn!(%bootstrap, "using an embedded in-process Kafka broker of its own: to share the ingest's, pass --brokers with the address the ingest printed");
            (bootstrap, Some(broker))
        }
    };
    segmenter::run(
        &settings,
        &bootstrap,
        service_runtime::shutdown::signal(),
        None,
    )
    .await
}

fn whatif(
    settings: &Settings,
    tiers: &std::path::Path,
    movers: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let current = settings.rules()?;
    let other = segmenter::whatif::load_other(tiers, &current)?;
    let Brokers::External(bootstrap) = settings.kafka.brokers()? else {
        anyhow::bail!(
            "whatif reads an existing orders topic: point --brokers at the broker that holds it"
        );
    };
    let client = service_runtime::kafka::client_config(
        &settings.kafka,
        &bootstrap,
        &[("client.id", "tierflow-segmenter-whatif")],
        &[
            ("group.id", "tierflow-segmenter-whatif"),
            ("enable.auto.commit", "false"),
        ],
    )?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .expect("static template"),
    );
    let report = segmenter::whatif::run(&client, &settings.topics.orders, &current, &other, &bar)?;
    println!(
        "{} records, {} customers; rule {} (current) vs {} ({}):\n",
        report.records,
        report.customers,
        current.version(),
        other.version(),
        tiers.display()
    );
    print!("{}", report.matrix_table(&current, &other));
    println!("\n{} customers would change tier", report.movers.len());
    if let Some(path) = movers {
        report.write_movers(path)?;
        println!("movers written to {}", path.display());
    }
    Ok(())
}
