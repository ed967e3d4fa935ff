//! `tierflow`: `dev` runs the whole pipeline locally; `lag` prints a consumer group's lag;
//! `topics ensure` creates or checks the pipeline's topics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tierflow::pipeline::{DevOptions, Pipeline, PipelineSettings};
use tierflow::status;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shopify order webhooks in, customer spending tiers in Okta out.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the whole pipeline in this process: the embedded Kafka broker (or --brokers), the
    /// ingest, the segmenter, the Okta writer, an Okta simulator seeded with the tier groups
    /// and users, optionally loadgen traffic, and a status page.
    Dev {
        /// The pipeline config.
        #[arg(long, env = "TIERFLOW_CONFIG", default_value = "config/dev.toml")]
        config: PathBuf,
        /// Kafka bootstrap servers instead of the configured ones.
        #[arg(long, conflicts_with = "kafka")]
        brokers: Option<String>,
        /// Run on Apache Kafka instead of the embedded broker: one KRaft node started by
        /// scripts/kafka.py (Java 17 and Maven; jars cached after the first run), the
        /// pipeline's topics made as `topics ensure` makes them, stopped on exit.
        #[arg(long)]
        kafka: bool,
        /// Send this many signed webhooks per second (loadgen).
        #[arg(long, value_name = "PER_SECOND")]
        load: Option<f64>,
        /// Okta users to create in the simulator (loadgen's customers).
        #[arg(long, default_value_t = 1000)]
        users: u64,
        /// Distinct customers loadgen's orders spread over.
        #[arg(long, default_value_t = 1000)]
        customers: u64,
        #[arg(long, default_value = "127.0.0.1:8088")]
        status_listen: SocketAddr,
        /// Lift the Okta simulator's rate limits (default: Okta's typical buckets, e.g. 600
        /// profile updates a minute, of which the writer takes half).
        #[arg(long)]
        okta_unthrottled: bool,
    },
    /// Create the pipeline's topics, or check existing ones: partitions, replication,
    /// min.insync.replicas, the changelog compacted and co-partitioned with the orders topic.
    /// A dry run unless --execute; drift is reported, never "fixed" (exit 2 when the pipeline
    /// cannot run on it).
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Print consumer-group lag (messages and seconds) per partition, like the exported
    /// `kafka_consumergroup_*` metrics. Without --group: the segmenter's and the writer's.
    Lag {
        #[arg(long, env = "TIERFLOW_CONFIG", default_value = "config/dev.toml")]
        config: PathBuf,
        /// Kafka bootstrap servers (required for the embedded broker: the address it printed).
        #[arg(long)]
        brokers: Option<String>,
        /// A group and the topic it consumes, `GROUP:TOPIC` (repeatable).
        #[arg(long = "group", value_name = "GROUP:TOPIC")]
        groups: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum TopicsAction {
    Ensure {
        #[arg(long, env = "TIERFLOW_CONFIG", default_value = "config/dev.toml")]
        config: PathBuf,
        /// Kafka bootstrap servers instead of the configured ones.
        #[arg(long)]
        brokers: Option<String>,
        /// Partitions of every topic (the changelog always gets the orders topic's count).
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        #[arg(long, default_value_t = 3)]
        replication_factor: i32,
        #[arg(long, default_value_t = 2)]
        min_insync_replicas: i32,
        /// Create what is missing (default: only report).
        #[arg(long)]
        execute: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev {
            config,
            brokers,
            kafka,
            load,
            users,
            customers,
            status_listen,
            okta_unthrottled,
        } => {
            let env: Vec<(String, String)> = service_runtime::config::process_env().collect();
            let settings = match PipelineSettings::load(Some(&config), env, brokers) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tierflow dev: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let options = DevOptions {
                users,
                load,
                customers,
                ephemeral_ports: false,
                status_listen,
                okta_unthrottled,
            };
            service_runtime::run_service("tierflow dev", dev(settings, options, kafka))
        }
        Command::Topics {
            action:
                TopicsAction::Ensure {
                    config,
                    brokers,
                    partitions,
                    replication_factor,
                    min_insync_replicas,
                    execute,
                },
        } => {
            let layout = service_runtime::topics::Layout {
                partitions,
                replication: replication_factor,
                min_insync_replicas,
            };
            match tierflow::topics_ensure(&config, brokers, layout, execute) {
                Ok((report, fatal)) => {
                    print!("{report}");
                    if fatal {
                        eprintln!("tierflow topics ensure: the pipeline cannot run on these topics (DRIFT! above)");
                        ExitCode::from(2)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("tierflow topics ensure: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Lag {
            config,
            brokers,
            groups,
        } => match tierflow::lag_table(&config, brokers, &groups) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tierflow lag: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// One Apache Kafka node from scripts/kafka.py with every pipeline topic (6 partitions,
/// replication 1), made through the Admin API as `tierflow topics ensure` makes them.
async fn start_apache_kafka(
    topics: &service_runtime::config::TopicsConfig,
) -> anyhow::Result<service_runtime::kafka::LocalKafka> {
    println!(
        "starting Apache Kafka (scripts/kafka.py; the first run resolves its jars with Maven)"
    );
    let topics = topics.clone();
    tokio::task::spawn_blocking(move || {
        let local = service_runtime::kafka::LocalKafka::start(1)?;
        let mut admin = rdkafka::ClientConfig::new();
        admin.set("bootstrap.servers", &local.bootstrap);
        let specs = service_runtime::topics::pipeline_topics(
            &topics,
            service_runtime::topics::Layout {
                partitions: 6,
                replication: 1,
                min_insync_replicas: 1,
            },
        );
        for finding in
            service_runtime::topics::ensure(&admin, &specs, true, Duration::from_secs(30))?
        {
            tracing::info!(%finding, "topic");
        }
        println!(
            "Apache Kafka at {} (logs and data: {})",
            local.bootstrap, local.dir
        );
        Ok(local)
    })
    .await
    .context("starting Apache Kafka")?
}

async fn dev(settings: PipelineSettings, options: DevOptions, kafka: bool) -> anyhow::Result<()> {
    let _telemetry =
        service_runtime::telemetry::init("tierflow", settings.for_ingest.telemetry.log_format)?;
    // Either broker lives on this thread for as long as the pipeline runs (the embedded one is
    // !Send; Apache Kafka is stopped when its handle drops).
    let (bootstrap, _embedded, _kafka) = if kafka {
        let local = start_apache_kafka(&settings.for_ingest.topics).await?;
        (local.bootstrap.clone(), None, Some(local))
    } else {
        let (bootstrap, embedded) = service_runtime::kafka::resolve_brokers(
            &settings.for_ingest.kafka,
            &settings.for_ingest.topics,
            "tierflow dev",
        )?;
        (bootstrap, embedded, None)
    };
    let segments = settings.for_ingest.topics.segments.clone();
    let pipeline = Pipeline::start(settings, &bootstrap, &options).await?;
    let data: status::Shared = Arc::new(Mutex::new(status::StatusData::default()));
    let (status_addr, status_task) =
        status::serve(options.status_listen, data.clone(), pipeline.stopped()).await?;
    let e = &pipeline.endpoints;
    println!("tierflow dev is running (Ctrl-C stops it):");
    println!("  Kafka               {}", e.bootstrap);
    println!(
        "  webhooks            POST http://{}/webhooks/shopify",
        e.webhooks
    );
    println!(
        "  Okta simulator      {} (state: {}/__sim/state)",
        e.okta, e.okta
    );
    println!("  status page         http://{status_addr}/");
    println!("  metrics             http://{}/metrics (ingest), http://{}/metrics (segmenter), http://{}/metrics (okta-writer)", e.ingest_admin, e.segmenter_admin, e.writer_admin);
    if let Some(rate) = options.load {
        println!(
            "  loadgen             {rate} webhooks/s over {} customers",
            options.customers
        );
    } else {
        println!("  traffic             none; try --load 100, or: cargo run --release --bin loadgen -- --secret dev-secret --url http://{}/webhooks/shopify", e.webhooks);
    }
    let collector = tokio::spawn(status::collect(
        data.clone(),
        e.clone(),
        pipeline.sim.clone(),
        pipeline.stopped(),
    ));
    let tail = tokio::spawn(status::tail_tier_changes(
        data.clone(),
        bootstrap.clone(),
        segments,
        pipeline.stopped(),
    ));
    let shutdown = service_runtime::shutdown::signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        if let Some(name) = pipeline.failed() {
            eprintln!("tierflow dev: {name} stopped unexpectedly; shutting down");
            break;
        }
        let d = data.lock().unwrap_or_else(|p| p.into_inner());
        let n = d.samples.len();
        if let Some(last) = d.samples.back() {
            let prev = n.checked_sub(3).and_then(|i| d.samples.get(i));
            println!("{}", status::summary_line(prev, last));
        }
    }
    println!("stopping: each service commits what it finished");
    let result = pipeline.stop().await;
    let _ = collector.await;
    let _ = tail.await;
    status_task.await.context("status page")??;
    result
}
