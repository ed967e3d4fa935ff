//! Poison records against the `segmenter` binary: records that once panicked it into a crash
//! loop (a total past `Decimal::MAX`), negative and absurd amounts, an order version dated in
//! year 9999, an order body re-sent under `shop/redact`, and bytes that are not JSON. Each is
//! quarantined with its reason, the process keeps running, and every other customer of the
//! same partitions reaches the reference state.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn poison(customer: u64, order_id: u64, amount: &str, updated_at: &str) -> Vec<u8> {
    format!(
        r#"{{"id":{order_id},"updated_at":"{updated_at}","financial_status":"paid","current_total_price_set":{{"shop_money":{{"amount":"{amount}","currency_code":"USD"}}}},"customer":{{"id":{customer}}}}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn poison_records_are_quarantined_and_the_partition_moves_on() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let (versions, inputs) = history(40, 5);
    let victim = versions[0].customer;
    let input = |topic: &'static str, body: Vec<u8>, id: &str| Input {
        topic,
        key: format!("{SHOP}/{victim}"),
        body,
        webhook_id: id.into(),
    };
    let existing = versions[0].order_id;
    let poisons = vec![
        input(
            "orders/updated",
            poison(
                victim,
                1,
                "79228162514264337593543950335",
                "2026-11-20T10:00:00Z",
            ),
            "p-max",
        ),
        input(
            "orders/updated",
            poison(victim, 2, "-500.00", "2026-11-20T10:00:00Z"),
            "p-negative",
        ),
        input(
            "orders/updated",
            poison(victim, existing, "0.00", "9999-12-31T23:59:59Z"),
            "p-future",
        ),
        // The exact bytes of an order, re-sent with an unsigned `shop/redact` header.
        input("shop/redact", versions[1].input("x").body, "p-shape"),
        input("orders/updated", b"{not json".to_vec(), "p-json"),
    ];
    produce(&bootstrap, &poisons).await;
    produce(&bootstrap, &inputs).await;

    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_segmenter"))
        .arg("--config")
        .arg(config)
        .args(["--brokers", &bootstrap])
        .env("TIERFLOW_SEGMENTER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("TIERFLOW_SEGMENTER__GROUP_ID", "g-poison")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("segmenter binary starts");

    wait_for_state(&bootstrap, &reference(&versions), Duration::from_secs(90)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the segmenter exited on poison records"
    );
    // The updates and the quarantine copies of one batch travel in separate produce requests
    // (one in flight per broker), so the state can be visible a moment before the copies:
    // wait for the five.
    let b = bootstrap.clone();
    let quarantined = tokio::task::spawn_blocking(move || {
        testkit::topic::read_at_least(&b, "shopify.orders.quarantine", 5, Duration::from_secs(30))
    })
    .await
    .unwrap();
    let reasons: BTreeSet<(String, String)> = quarantined
        .iter()
        .map(|m| {
            (
                header(m, schemas::headers::SHOPIFY_WEBHOOK_ID).unwrap_or_default(),
                header(m, schemas::headers::QUARANTINE_REASON).unwrap_or_default(),
            )
        })
        .collect();
    for want in [
        ("p-max", "amount_out_of_range"),
        ("p-negative", "negative_amount"),
        ("p-future", "event_time_in_future"),
        ("p-shape", "shape_mismatch"),
        ("p-json", "invalid_json"),
    ] {
        assert!(
            reasons.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} not quarantined; got {reasons:?}"
        );
    }
    // Quarantine copies say where the original is.
    for m in &quarantined {
        assert!(header(m, schemas::headers::SOURCE_OFFSET).is_some());
    }
    let _ = child.kill();
    let _ = child.wait();
}
