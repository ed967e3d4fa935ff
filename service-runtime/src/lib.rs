//! Plumbing every tierflow service shares, and nothing else: configuration loading
//! ([`config`]), logs and traces ([`telemetry`]), the admin listener with `/metrics`
//! ([`admin`]), Kafka client settings and the embedded dev broker ([`kafka`]), consumer-group lag ([`lag`]), and the shutdown
//! signal ([`shutdown`]). Service logic lives in the service crates.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod kafka;
pub mod lag;
pub mod shutdown;
pub mod telemetry;
pub mod topics;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

/// The flags every service binary takes (flattened into its own `clap` parser).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The pipeline's TOML config file.
    #[arg(long, env = "TIERFLOW_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, or `embedded` for an in-process dev broker; overrides
    /// [kafka] brokers.
    #[arg(long, global = true)]
    pub brokers: Option<String>,
    /// Validate the config and exit (0 if valid, 2 if not).
    #[arg(long)]
    pub check_config: bool,
}

impl ServiceArgs {
    /// Load and validate the settings from the file, the environment and `--brokers`. On an
    /// invalid config: the message on stderr and exit code 2.
    pub fn load<T: config::ServiceSettings>(&self, service: &str) -> Result<T, ExitCode> {
        config::load_service(
            self.config.as_deref(),
            config::process_env(),
            self.brokers.clone(),
        )
        .map_err(|e| {
            eprintln!("{service}: {e}");
            ExitCode::from(2)
        })
    }
}

/// The tail of every service's `main`: a multi-threaded runtime, `run` on it, and one
/// `service: error` line (with its causes) on stderr if it fails.
pub fn run_service(service: &str, run: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
