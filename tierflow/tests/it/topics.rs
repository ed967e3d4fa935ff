//! `tierflow topics ensure` against Apache Kafka (one KRaft node from `scripts/kafka.py`): a
//! dry run changes nothing, `--execute` creates every topic as production needs it, a second
//! run finds them in order, and a changelog that is not compacted or not co-partitioned is
//! reported as drift the pipeline cannot run on (exit 2), never silently altered.

use std::process::Command;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use service_runtime::kafka::LocalKafka;

fn ensure(bootstrap: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierflow"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TIERFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["topics", "ensure", "--config"])
        .arg(config)
        .args([
            "--brokers",
            bootstrap,
            "--partitions",
            "6",
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "1",
        ])
        .args(extra)
        .envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn ensure_creates_checks_and_reports_drift() {
    let kafka = LocalKafka::start(1).unwrap();
    let b = kafka.bootstrap.as_str();

    let (code, out) = ensure(b, &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("missing").count(), 5, "{out}");

    let (code, out) = ensure(b, &["--execute"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("created").count(), 5, "{out}");

    let (code, out) = ensure(b, &[], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("ok ").count(), 5, "{out}");

    // What was created is what production needs.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b)
        .create()
        .unwrap();
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic("segmenter.ledger.changelog")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let changelog = described.into_iter().next().unwrap().unwrap();
    assert_eq!(
        changelog.get("cleanup.policy").unwrap().value.as_deref(),
        Some("compact")
    );

    // A changelog made by hand the wrong way: 3 partitions, not compacted.
    testkit::broker::create_topic(b, "bad.changelog", 3, &[]).await;
    let (code, out) = ensure(
        b,
        &["--execute"],
        &[("TIERFLOW_TOPICS__LEDGER_CHANGELOG", "bad.changelog")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DRIFT!  bad.changelog: 3 partitions, want 6"),
        "{out}"
    );
    assert!(
        out.contains("cleanup.policy = delete, want compact"),
        "{out}"
    );
}
