//! `segmenter`: run the segmenter service.

use std::process::ExitCode;

use clap::Parser;
use segmenter::config::Settings;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Recomputes per-customer spend from order events and emits tier changes.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    service: service_runtime::ServiceArgs,
    #[command(subcommand)]
    command: Option<segmenter::tools::Command>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings: Settings = match cli.service.load("segmenter") {
        Ok(s) => s,
        Err(code) => return code,
    };
    if cli.service.check_config {
        println!(
            "segmenter: config is valid (rule version {})",
            settings
                .rules()
                .map(|r| r.version().to_owned())
                .unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(command) = &cli.command {
        return match command.run(&settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("segmenter {}: {e:#}", command.name());
                ExitCode::FAILURE
            }
        };
    }
    service_runtime::run_service("segmenter", run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = service_runtime::telemetry::init("segmenter", settings.telemetry.log_format)?;
    let (bootstrap, _embedded) =
        service_runtime::kafka::resolve_brokers(&settings.kafka, &settings.topics, "segmenter")?;
    segmenter::Application::build(&settings, &bootstrap)
        .await?
        .run_until(service_runtime::shutdown::signal())
        .await
}
