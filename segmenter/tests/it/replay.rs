//! `segmenter replay` and `segmenter digest`: a rebuild from the earliest offset into empty
//! state reproduces exactly the original run's decisions.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn cli(bootstrap: &str, args: &[&str]) -> (bool, String) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_segmenter"))
        .arg("--config")
        .arg(config)
        .args(["--brokers", bootstrap])
        .env("TIERFLOW_SEGMENTER__GROUP_ID", "g-replay")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn client(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// The plan for `--to-earliest` on g-replay (its `current` column is the committed offsets).
async fn plan_earliest(bootstrap: &str) -> Vec<segmenter::replay::Move> {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        segmenter::replay::plan(
            &client(&b),
            "g-replay",
            "shopify.orders",
            &segmenter::replay::Target::Earliest,
        )
        .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn rebuild_from_earliest_reproduces_the_same_decisions() {
    let (_broker, bootstrap, versions, _) = seeded(80, 33).await;
    let want = reference(&versions);
    let running = start(settings(&bootstrap, "g-replay"), &bootstrap).await;
    wait_for_state(&bootstrap, &want, Duration::from_secs(60)).await;
    running.stop().await;

    let b = bootstrap.clone();
    let original = tokio::task::spawn_blocking(move || {
        segmenter::replay::digest(&client(&b), "customer.segments", &Default::default(), None)
            .unwrap()
    })
    .await
    .unwrap();
    let total: u64 = original.partitions.values().map(|(n, _)| n).sum();
    assert!(total >= want.len() as u64);

    // Dry run by default: shows the plan, changes nothing.
    let (ok, out) = cli(&bootstrap, &["replay", "--to-earliest"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("dry run") && out.contains("records will be (re)processed"),
        "{out}"
    );
    let plan = plan_earliest(&bootstrap).await;
    assert!(
        plan.iter().all(|m| m.current == Some(m.high)),
        "dry run moved offsets: {plan:?}"
    );

    // A rebuild without the whole history is refused.
    let (ok, out) = cli(
        &bootstrap,
        &["replay", "--shift-by", "-5", "--rebuild-state", "--execute"],
    );
    assert!(
        !ok && out.contains("--rebuild-state needs --to-earliest"),
        "{out}"
    );

    let (ok, out) = cli(
        &bootstrap,
        &["replay", "--to-earliest", "--rebuild-state", "--execute"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("offsets committed"), "{out}");

    let running = start(settings(&bootstrap, "g-replay"), &bootstrap).await;
    let ends = original.ends.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let rebuilt = loop {
        let (b, from) = (bootstrap.clone(), ends.clone());
        let d = tokio::task::spawn_blocking(move || {
            segmenter::replay::digest(&client(&b), "customer.segments", &from, None).unwrap()
        })
        .await
        .unwrap();
        let n: u64 = d.partitions.values().map(|(n, _)| n).sum();
        if n >= total || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    running.stop().await;
    assert_eq!(
        rebuilt.partitions, original.partitions,
        "per-partition decisions differ"
    );
    assert_eq!(rebuilt.combined, original.combined);

    // The CLI prints the same digest for the same range.
    let to: Vec<String> = ends.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    let (ok, out) = cli(&bootstrap, &["digest", "--to", &to.join(",")]);
    assert!(
        ok && out.contains(&format!("digest {}", original.combined)),
        "{out}"
    );
}

#[tokio::test]
async fn replay_vocabulary_plans_offsets() {
    let (_broker, bootstrap, _, _) = seeded(30, 44).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        use segmenter::replay::{plan, Target};
        let c = client(&b);
        let latest = plan(&c, "g-vocab", "shopify.orders", &Target::Latest).unwrap();
        let earliest = plan(&c, "g-vocab", "shopify.orders", &Target::Earliest).unwrap();
        let shifted = plan(&c, "g-vocab", "shopify.orders", &Target::ShiftBy(2)).unwrap();
        let at = plan(&c, "g-vocab", "shopify.orders", &Target::Offset(1_000_000)).unwrap();
        for i in 0..latest.len() {
            assert_eq!(latest[i].target, latest[i].high);
            assert_eq!(earliest[i].target, earliest[i].low);
            assert_eq!(
                earliest[i].current, None,
                "a new group has no committed offset"
            );
            assert_eq!(shifted[i].target, (shifted[i].low + 2).min(shifted[i].high));
            assert_eq!(at[i].target, at[i].high, "clamped to the log end");
        }
    })
    .await
    .unwrap();
    let (ok, out) = cli(&bootstrap, &["replay", "--to-earliest", "--to-latest"]);
    assert!(
        !ok && out.contains("cannot be used with"),
        "one target only: {out}"
    );
}

#[tokio::test]
async fn execute_is_refused_while_the_group_has_live_members() {
    let (_broker, bootstrap, versions, _) = seeded(20, 55).await;
    let running = start(settings(&bootstrap, "g-replay"), &bootstrap).await;
    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(60)).await;
    // Auto-commit (every second) has the segmenter's position committed at the log end.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !plan_earliest(&bootstrap)
        .await
        .iter()
        .all(|m| m.current == Some(m.high))
    {
        assert!(Instant::now() < deadline, "offsets never committed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let b = bootstrap.clone();
    let (ok, out) =
        tokio::task::spawn_blocking(move || cli(&b, &["replay", "--to-earliest", "--execute"]))
            .await
            .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("live member"), "{out}");
    // Nothing moved: the running segmenter's committed offsets are still at the end.
    running.stop().await;
    let plan = plan_earliest(&bootstrap).await;
    assert!(plan.iter().all(|m| m.current == Some(m.high)), "{plan:?}");
}
