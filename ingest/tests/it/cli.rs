//! The `ingest` binary as an operator runs it: config validation, startup on the embedded
//! broker, a webhook, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ingest");

fn config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TIERFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn check_config_accepts_good_files_and_names_the_field_in_bad_ones() {
    let ok = clean_env(
        Command::new(BIN)
            .arg("--check-config")
            .arg("--config")
            .arg(config_dir().join("dev.toml")),
    )
    .output()
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = clean_env(
        Command::new(BIN)
            .args(["--check-config", "--config"])
            .arg(config_dir().join("dev.toml")),
    )
    .env("TIERFLOW_INGEST__MAX_BODY_BYTES", "10")
    .output()
    .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("ingest.max_body_bytes") && stderr.contains("1 MiB"),
        "{stderr}"
    );

    let no_brokers = clean_env(Command::new(BIN).arg("--check-config"))
        .env("TIERFLOW_SHOPIFY__WEBHOOK_SECRETS", "s")
        .output()
        .unwrap();
    assert_eq!(no_brokers.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_brokers.stderr).contains("kafka.brokers"));
}

#[tokio::test]
async fn runs_on_the_embedded_broker_accepts_a_webhook_and_stops_on_sigterm() {
    let mut child = clean_env(
        Command::new(BIN)
            .arg("--config")
            .arg(config_dir().join("dev.toml")),
    )
    .env("TIERFLOW_INGEST__LISTEN", "127.0.0.1:0")
    .env("TIERFLOW_INGEST__ADMIN_LISTEN", "127.0.0.1:0")
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("ingest listening on"))
        .expect("the binary announces where it listens");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();

    let body = br#"{"id":820982911946154508,"customer":{"id":115310627314723954}}"#.to_vec();
    let webhook = loadgen::Webhook::signed(
        "orders/create",
        "dev.myshopify.com",
        "cli-1",
        b"dev-secret",
        body,
    );
    let mut req = reqwest::Client::new()
        .post(format!("{url}/webhooks/shopify"))
        .body(webhook.body.clone());
    for (k, v) in webhook.headers() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit after SIGTERM: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broken config file or a wrongly typed secret is reported with its place, never its text.
#[test]
fn config_errors_never_print_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[kafka]\nbrokers = \"embedded\"\n[shopify]\nwebhook_secrets = [\"shpss_leaky_secret_1234\"\n",
    )
    .unwrap();
    let typed = dir.path().join("typed.toml");
    std::fs::write(
        &typed,
        "[kafka]\nbrokers = \"embedded\"\n[shopify]\nwebhook_secrets = 424242424242\n",
    )
    .unwrap();
    for (file, secret) in [
        (&broken, "shpss_leaky_secret_1234"),
        (&typed, "424242424242"),
    ] {
        let out = clean_env(
            Command::new(BIN)
                .arg("--check-config")
                .arg("--config")
                .arg(file),
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(secret), "{text}");
        assert!(
            text.contains("line") || text.contains("shopify.webhook_secrets"),
            "{text}"
        );
    }
}
