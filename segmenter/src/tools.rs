//! The segmenter's operator commands (`segmenter whatif`, `replay`, `digest`): their
//! arguments, and what each prints. The binary's `main` only parses and dispatches.

use std::path::PathBuf;

use crate::config::Settings;
use crate::replay::{self, Target};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Replay the orders topic under another tier table, emit nothing, and print how many
    /// customers would move from each tier to each other tier.
    Whatif {
        /// A TOML file with `[[tiers]]` rows (and optionally `[spend]`).
        #[arg(long)]
        tiers: PathBuf,
        /// Also write the customers who would move, as CSV (`*.csv`) or JSON.
        #[arg(long, value_name = "PATH")]
        movers: Option<PathBuf>,
        /// Re-tier the current state (the changelog) instead of replaying history: faster, but
        /// only when the other file keeps the current [spend] settings.
        #[arg(long)]
        from_state: bool,
    },
    /// Move the group's committed offsets (like `kafka-consumer-groups --reset-offsets`);
    /// a dry run unless --execute.
    Replay(ReplayArgs),
    /// Digest the decisions in a range of the segments topic, to compare two runs.
    Digest {
        /// Start offsets, `P:O,P:O` (default: each partition's start).
        #[arg(long, default_value = "")]
        from: String,
        /// End offsets (exclusive), `P:O,P:O` (default: each partition's current end).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
pub struct ReplayArgs {
    /// Consumer group to reset (default: [segmenter] group_id).
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long, group = "target")]
    pub to_earliest: bool,
    #[arg(long, group = "target")]
    pub to_latest: bool,
    #[arg(long, group = "target", value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    #[arg(long, group = "target", value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// RFC 3339, e.g. 2026-11-01T00:00:00Z: the first record at or after it.
    #[arg(long, group = "target", value_name = "RFC3339")]
    pub to_datetime: Option<String>,
    /// Back from now, e.g. `2h` or `7days`.
    #[arg(long, group = "target", value_name = "DURATION")]
    pub by_duration: Option<String>,
    /// Show the plan only (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    /// Apply the plan.
    #[arg(long)]
    pub execute: bool,
    /// Also start the next run from empty state (with --to-earliest: a full rebuild).
    #[arg(long)]
    pub rebuild_state: bool,
}

impl ReplayArgs {
    /// The one target the flags name.
    pub fn target(&self) -> anyhow::Result<Target> {
        Ok(if self.to_earliest {
            Target::Earliest
        } else if self.to_latest {
            Target::Latest
        } else if let Some(o) = self.to_offset {
            Target::Offset(o)
        } else if let Some(n) = self.shift_by {
            Target::ShiftBy(n)
        } else if let Some(t) = &self.to_datetime {
            let t = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| anyhow::anyhow!("--to-datetime `{t}`: {e}"))?;
            Target::Datetime(t.timestamp_millis())
        } else if let Some(d) = &self.by_duration {
            let d = humantime::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("--by-duration `{d}`: {e}"))?;
            let now = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis(),
            )?;
            Target::Datetime(now - i64::try_from(d.as_millis())?)
        } else {
            anyhow::bail!("name one target: --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime or --by-duration")
        })
    }
}

impl Command {
    /// The command's name, for error messages (`segmenter replay: ...`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Whatif { .. } => "whatif",
            Command::Replay(_) => "replay",
            Command::Digest { .. } => "digest",
        }
    }

    /// Run the command against `settings`' cluster.
    pub fn run(&self, settings: &Settings) -> anyhow::Result<()> {
        match self {
            Command::Whatif {
                tiers,
                movers,
                from_state,
            } => whatif(settings, tiers, movers.as_deref(), *from_state),
            Command::Replay(args) => replay(settings, args),
            Command::Digest { from, to } => digest(settings, from, to.as_deref()),
        }
    }
}

fn whatif(
    settings: &Settings,
    tiers: &std::path::Path,
    movers: Option<&std::path::Path>,
    from_state: bool,
) -> anyhow::Result<()> {
    let current = settings.rules()?;
    let other = crate::whatif::load_other(tiers, &current)?;
    let client = tool_client(settings, "whatif")?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .expect("static template"),
    );
    let report = if from_state {
        crate::whatif::run_on_state(&client, &settings.topics.ledger_changelog, &current, &other)?
    } else {
        crate::whatif::run(&client, &settings.topics.orders, &current, &other, &bar)?
    };
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

/// A client config for the tools, which work on an existing cluster's topics.
fn tool_client(settings: &Settings, tool: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    let bootstrap = settings.kafka.existing_brokers(
        "this command works on existing topics: point --brokers at the broker that holds them (for the embedded broker, the address the ingest printed)",
    )?;
    let client_id = format!("tierflow-segmenter-{tool}");
    Ok(service_runtime::kafka::client_config(
        &settings.kafka,
        &bootstrap,
        &[("client.id", client_id.as_str())],
        &[
            ("group.id", client_id.as_str()),
            ("enable.auto.commit", "false"),
        ],
    )?)
}

fn replay(settings: &Settings, args: &ReplayArgs) -> anyhow::Result<()> {
    let client = tool_client(settings, "replay")?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| settings.segmenter.group_id.clone());
    let target = args.target()?;
    if args.rebuild_state && target != Target::Earliest {
        anyhow::bail!("--rebuild-state needs --to-earliest: empty state plus part of the history would be wrong");
    }
    let topic = &settings.topics.orders;
    let moves = replay::plan(&client, &group, topic, &target)?;
    println!("group {group}, topic {topic}:");
    println!(
        "{:>9} {:>14} {:>14} {:>14} {:>14}",
        "partition", "current", "new", "log start", "log end"
    );
    for m in &moves {
        let current = m.current.map_or("-".to_owned(), |c| c.to_string());
        println!(
            "{:>9} {:>14} {:>14} {:>14} {:>14}",
            m.partition, current, m.target, m.low, m.high
        );
    }
    let to_redo: i64 = moves.iter().map(|m| m.high - m.target).sum();
    println!(
        "{to_redo} records will be (re)processed{}",
        if args.rebuild_state {
            ", from empty state"
        } else {
            ""
        }
    );
    if !args.execute {
        println!("dry run: nothing changed; add --execute to apply");
        return Ok(());
    }
    // DescribeGroups first (it names the state); brokers without it (the embedded one) still
    // get the check `execute` makes by joining the group.
    match replay::ensure_inactive(&client, &group) {
        Ok(()) => {}
        Err(e @ replay::GroupCheckError::LiveMembers { .. }) => return Err(e.into()),
        Err(replay::GroupCheckError::Unknown(e)) => {
            eprintln!("note: {e:#}; relying on the membership check while committing");
        }
    }
    if args.rebuild_state {
        let partitions = i32::try_from(moves.len())?;
        crate::changelog::reset_state(&client, &settings.topics.ledger_changelog, partitions)?;
        println!(
            "state reset markers written to {}",
            settings.topics.ledger_changelog
        );
    }
    replay::execute(&client, &group, topic, &moves)?;
    println!("offsets committed; start the segmenter to reprocess");
    Ok(())
}

fn digest(settings: &Settings, from: &str, to: Option<&str>) -> anyhow::Result<()> {
    let client = tool_client(settings, "digest")?;
    let from = replay::parse_offsets(from)?;
    let to = to.map(replay::parse_offsets).transpose()?;
    let d = replay::digest(&client, &settings.topics.segments, &from, to.as_ref())?;
    for (p, (count, hex)) in &d.partitions {
        println!("partition {p}: {count} decisions, sha256 {hex}");
    }
    let ends: Vec<String> = d.ends.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    println!("digest {}", d.combined);
    println!(
        "end offsets {} (pass as --from to digest a later run)",
        ends.join(",")
    );
    Ok(())
}
