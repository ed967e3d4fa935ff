//! `kill -9` the segmenter process at arbitrary points while input keeps arriving; restart it;
//! the final state is exact and the decisions emitted, once exact redeliveries (same event id)
//! are removed, are exactly those of an uninterrupted run over the same input.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use rand::{Rng, SeedableRng};

fn spawn(bootstrap: &str) -> Child {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    Command::new(env!("CARGO_BIN_EXE_segmenter"))
        .arg("--config")
        .arg(config)
        .args(["--brokers", bootstrap])
        .env("TIERFLOW_SEGMENTER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("TIERFLOW_SEGMENTER__GROUP_ID", "g-crash")
        .env("TIERFLOW_SEGMENTER__BATCH_SIZE", "50")
        .env("TIERFLOW_KAFKA__CLIENT__SESSION_TIMEOUT_MS", "6000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("segmenter binary starts")
}

/// Per customer, the event ids in emission order with exact repeats removed.
fn decisions(updates: &[schemas::SegmentUpdate]) -> BTreeMap<u64, Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for u in updates {
        if seen.insert(u.event_id.clone()) {
            out.entry(u.customer_id)
                .or_default()
                .push(u.event_id.clone());
        }
    }
    out
}

#[tokio::test]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let _heavy = testkit::heavy().await;
    let (versions, inputs) = history(150, 9);
    let want = reference(&versions);

    // The uninterrupted run.
    let clean = broker();
    let clean_bootstrap = clean.bootstrap_servers();
    produce(&clean_bootstrap, &inputs).await;
    let running = start(settings(&clean_bootstrap, "g-clean"), &clean_bootstrap).await;
    let clean_updates = wait_for_state(&clean_bootstrap, &want, Duration::from_secs(60)).await;
    running.stop().await;

    // The same input, arriving in chunks, with the process killed between and during them.
    let crashy = broker();
    let bootstrap = crashy.bootstrap_servers();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let chunks: Vec<&[Input]> = inputs.chunks(inputs.len() / 5 + 1).collect();
    let mut kills = 0;
    for chunk in &chunks {
        produce(&bootstrap, chunk).await;
        let mut child = spawn(&bootstrap);
        // Long enough to join the group (the mock coordinator takes ~3 s) and get some work
        // done, short enough to die mid-stream.
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_500..6_000))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        kills += 1;
    }
    let mut last = spawn(&bootstrap);
    let crash_updates = wait_for_state(&bootstrap, &want, Duration::from_secs(120)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status();
    let status = last.wait().unwrap();
    assert!(status.success(), "graceful stop after SIGTERM: {status}");

    assert_eq!(kills, chunks.len());
    let (clean_d, crash_d) = (decisions(&clean_updates), decisions(&crash_updates));
    assert_eq!(crash_d.len(), clean_d.len(), "same customers decided");
    for (customer, ids) in &clean_d {
        assert_eq!(
            crash_d.get(customer),
            Some(ids),
            "customer {customer}: different decisions after crashes"
        );
    }
    eprintln!(
        "{} updates uninterrupted, {} with {kills} kills ({} exact redeliveries)",
        clean_updates.len(),
        crash_updates.len(),
        crash_updates.len() - clean_updates.len()
    );
}
