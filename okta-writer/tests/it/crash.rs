//! `kill -9` the okta-writer binary mid-stream, restart it, and the final Okta state is still
//! exact; SIGTERM stops it cleanly. Also the binary's CLI: `--check-config`, `groups`,
//! `dlq list`.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;
use okta_sim::{Faults, SimConfig};

fn command(bootstrap: &str, okta: &str) -> Command {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
    let mut c = Command::new(env!("CARGO_BIN_EXE_okta-writer"));
    c.arg("--config")
        .arg(config)
        .args(["--brokers", bootstrap])
        .env("TIERFLOW_OKTA__BASE_URL", okta)
        .env("TIERFLOW_OKTA__STORES", SHOP)
        .env("TIERFLOW_OKTA_WRITER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("TIERFLOW_OKTA_WRITER__GROUP_ID", "w-crash")
        .env("TIERFLOW_OKTA__RETRY_INITIAL_INTERVAL", "10ms")
        .env("TIERFLOW_KAFKA__CLIENT__SESSION_TIMEOUT_MS", "6000")
        .env("RUST_LOG", "warn");
    c
}

fn spawn(bootstrap: &str, okta: &str) -> Child {
    command(bootstrap, okta)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("okta-writer binary starts")
}

fn run(bootstrap: &str, okta: &str, args: &[&str]) -> Output {
    command(bootstrap, okta).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_and_restarted_the_final_state_is_exact() {
    let _heavy = testkit::heavy().await;
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    // Slow Okta so the kill lands while work is in flight.
    let sim = sim(
        SimConfig {
            faults: Faults {
                latency: Duration::from_millis(15),
                error_rate: 0.1,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
        60,
    )
    .await;
    let mut updates = Vec::new();
    let mut finals = Vec::new();
    for c in 0..60 {
        let h = history(c, 2 + c % 5, 8_000 + 13 * c as i64);
        finals.push(h.last().unwrap().clone());
        updates.extend(h);
    }
    let (first, second) = updates.split_at(updates.len() / 2);
    produce(&bootstrap, first).await;
    let mut child = spawn(&bootstrap, &sim.base_url());
    // Wait until some, not all, of the work is done, then SIGKILL.
    wait_for("some applied updates", Duration::from_secs(30), || {
        sim.shared
            .requests()
            .iter()
            .filter(|r| r.operation == "updateUser" && r.status == 200)
            .count()
            >= 10
    })
    .await;
    produce(&bootstrap, second).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let done_at_kill = finals.iter().filter(|u| okta_matches(&sim, u)).count();
    assert!(
        done_at_kill < finals.len(),
        "the kill came too late to test anything"
    );

    let mut restarted = spawn(&bootstrap, &sim.base_url());
    wait_for(
        "every final state after the restart",
        Duration::from_secs(90),
        || finals.iter().all(|u| okta_matches(&sim, u)),
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &restarted.id().to_string()])
        .status();
    let status = restarted.wait().unwrap();
    assert!(status.success(), "graceful stop after SIGTERM: {status}");
    let settings = settings(&bootstrap, &sim.base_url(), "w-crash");
    assert!(dead_letters(&settings, &bootstrap).await.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_check_config_groups_and_dlq_list() {
    let broker = broker();
    let bootstrap = broker.bootstrap_servers();
    let sim = sim(SimConfig::default(), 3).await;
    let okta = sim.base_url();

    let out = run(&bootstrap, &okta, &["--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It shows what the store writes (TIERFLOW_OKTA__STORES: one store, plain names).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "store {SHOP}: attributes shopify_orders_count, shopify_total_spent; tier groups Shopify Potential"
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = command(&bootstrap, "http://okta.example.com")
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("okta.base_url"));

    // `groups` in its own runtime thread: the simulator serves from this test's runtime.
    let b = bootstrap.clone();
    let o = okta.clone();
    let out = tokio::task::spawn_blocking(move || run(&b, &o, &["groups"]))
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("Shopify Potential") && table.contains("Shopify VIP"),
        "{table}"
    );
    let potential = table
        .lines()
        .find(|l| l.contains("Shopify Potential"))
        .unwrap();
    assert!(
        potential.trim_end().ends_with(" 3"),
        "3 members: {potential}"
    );

    let b = bootstrap.clone();
    let o = okta.clone();
    let out = tokio::task::spawn_blocking(move || run(&b, &o, &["dlq", "list"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 entries"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A tier group missing in Okta stops startup, naming it.
    sim.shared
        .store
        .lock()
        .unwrap()
        .groups
        .retain(|_, g| g.name != "Shopify VIP");
    let b = bootstrap.clone();
    let out = tokio::task::spawn_blocking(move || run(&b, &okta, &["groups"]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`Shopify VIP`") && err.contains("does not exist"),
        "{err}"
    );
}
