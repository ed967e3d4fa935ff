//! `segmenter whatif` over a real topic: the from→to matrix matches an independent
//! computation, and the binary prints it and writes the movers.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::*;
use rust_decimal::Decimal;
use schemas::TierTable;

const OTHER: &str = r#"
[[tiers]]
name = "Bronze"
min = "0"
max = "50"
okta_group = "Shopify Bronze"

[[tiers]]
name = "Gold"
min = "50"
okta_group = "Shopify Gold"
"#;

fn tier_of(table: &TierTable, total: Decimal) -> String {
    // Independent of TierTable::tier_for: a linear scan over the half-open rows.
    table
        .rows()
        .iter()
        .find(|r| r.min <= total && r.max.is_none_or(|m| total < m))
        .map(|r| r.name.clone())
        .unwrap()
}

#[tokio::test]
async fn whatif_matrix_matches_an_independent_computation() {
    let (_broker, bootstrap, versions, inputs) = seeded(120, 21).await;

    let dir = tempfile::tempdir().unwrap();
    let other_path = dir.path().join("other.toml");
    std::fs::write(&other_path, OTHER).unwrap();
    let s = settings(&bootstrap, "unused");
    let current = s.rules().unwrap();
    let other = segmenter::whatif::load_other(&other_path, &current).unwrap();
    let client = {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &bootstrap)
            .set("group.id", "whatif-test");
        c
    };
    let bar = indicatif::ProgressBar::hidden();
    let (report, other) = tokio::task::spawn_blocking(move || {
        (
            segmenter::whatif::run(&client, "shopify.orders", &current, &other, &bar).unwrap(),
            other,
        )
    })
    .await
    .unwrap();

    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, (total, _)) in reference(&versions) {
        let from = tier_of(&TierTable::template(), total);
        let to = tier_of(&other.tiers, total);
        *want.entry((from, to)).or_default() += 1;
    }
    assert_eq!(report.matrix, want);
    assert_eq!(report.customers, 120);
    assert_eq!(report.records, inputs.len() as u64);
    let moving: u64 = want
        .iter()
        .filter(|((f, t), _)| f != t)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(report.movers.len() as u64, moving);

    // The binary: matrix on stdout, movers in a CSV.
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let csv = dir.path().join("movers.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_segmenter"))
        .arg("--config")
        .arg(&config)
        .args(["--brokers", &bootstrap, "whatif", "--tiers"])
        .arg(&other_path)
        .arg("--movers")
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("from \\ to") && stdout.contains("Bronze") && stdout.contains("VIP"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{moving} customers would change tier")),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        moving + 1,
        "header + one row per mover"
    );
    assert!(text.starts_with("shop,customer_id,email,total_spent,other_total_spent,from,to\n"));

    // From the current state (the changelog) instead of history: the same matrix.
    let running = start(settings(&bootstrap, "g-whatif"), &bootstrap).await;
    wait_for_state(
        &bootstrap,
        &reference(&versions),
        std::time::Duration::from_secs(60),
    )
    .await;
    running.stop().await;
    let (b, path) = (bootstrap.clone(), other_path.clone());
    let (from_state, refused) = tokio::task::spawn_blocking(move || {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &b)
            .set("group.id", "whatif-test");
        let current = settings(&b, "unused").rules().unwrap();
        let other = segmenter::whatif::load_other(&path, &current).unwrap();
        let report =
            segmenter::whatif::run_on_state(&c, "segmenter.ledger.changelog", &current, &other)
                .unwrap();
        let mut spend = current.spend.clone();
        spend.count_test_orders = true;
        let recounting = segmenter::rules::Rules::new(other.tiers.clone(), spend);
        let refused = segmenter::whatif::run_on_state(
            &c,
            "segmenter.ledger.changelog",
            &current,
            &recounting,
        )
        .unwrap_err()
        .to_string();
        (report, refused)
    })
    .await
    .unwrap();
    assert_eq!(from_state.matrix, want);
    assert_eq!(from_state.movers.len() as u64, moving);
    assert!(refused.contains("replay history instead"), "{refused}");
}
