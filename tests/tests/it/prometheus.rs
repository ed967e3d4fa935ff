//! The alert rules and the Grafana dashboard against Prometheus itself: `promtool` checks and
//! unit-tests the rules (deploy/prometheus/alerts.test.yml), and a real Prometheus scrapes a
//! running pipeline so every PromQL expression in the dashboard and the rules can be run
//! against it; any query that errors or returns no series fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Broker;
use tests::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` is needed: run scripts/install-test-deps.sh (Debian package `prometheus`)");
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let dir = deploy().join("prometheus");
    let check = Command::new(tool("promtool"))
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new(tool("promtool"))
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    // Every runbook link points at a heading of docs/OPERATIONS.md (GitHub's anchor rule).
    let ops = std::fs::read_to_string(deploy().join("../docs/OPERATIONS.md")).unwrap();
    let anchors: Vec<String> = ops
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    for link in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook: docs/OPERATIONS.md#"))
    {
        assert!(
            anchors.iter().any(|a| a == link),
            "runbook anchor #{link} is not a heading in docs/OPERATIONS.md"
        );
    }
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no promtool test for {line}"
        );
    }
}

/// Every expression: the dashboard's targets, and each alert's condition without its final
/// threshold (a healthy pipeline must still return the series the alert compares).
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deploy().join("grafana/tierflow.json")).unwrap())
            .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("dashboard `{}`", p["title"].as_str().unwrap()),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let rules: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap().trim();
            let base = [" > ", " < ", " == "]
                .iter()
                .filter_map(|op| expr.rsplit_once(op))
                .find(|(_, threshold)| threshold.trim().parse::<f64>().is_ok())
                .map(|(lhs, _)| lhs.trim().to_owned())
                .unwrap_or_else(|| expr.to_owned());
            out.push((format!("alert {}", r["alert"].as_str().unwrap()), base));
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_and_alert_query_returns_series_from_a_real_prometheus() {
    let _heavy = testkit::heavy().await;
    let broker = Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let pipeline = start_pipeline(&bootstrap, |_| {}).await;
    // Some Okta errors so the error panels have series, and a body the segmenter quarantines.
    pipeline.sim.set_faults(okta_sim::Faults {
        error_rate: 0.1,
        ..Default::default()
    });
    let mut history = history(40, 3);
    for u in okta_users(&customers(&history)) {
        pipeline.sim.add_user(&u).unwrap();
    }
    history.push(OrderVersion {
        order_id: 999_999,
        customer: Some(5),
        cents: -1,
        second: 1,
        status: "paid",
        cancelled: false,
        test: false,
        deleted: false,
    });

    let dir = std::env::temp_dir().join(format!("tierflow-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = &pipeline.endpoints;
    let rules = deploy().join("prometheus/alerts.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: tierflow\n    static_configs:\n      - targets: ['{}', '{}', '{}']\n",
            rules.display(),
            e.ingest_admin,
            e.segmenter_admin,
            e.writer_admin
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Prometheus(
        Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    deliver(e.webhooks, &deliveries(&history, 3)).await;
    // Let Prometheus scrape the pipeline at work for a while (rates need two samples).
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let started = Instant::now();
    loop {
        let up = http
            .get(format!("{api}/query"))
            .query(&[("query", "sum(up)")])
            .send()
            .await;
        let n = match up {
            Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned)
            }),
            Err(_) => None,
        };
        if n.as_deref() == Some("3") && started.elapsed() > Duration::from_secs(15) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "Prometheus never scraped all three services (up = {n:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rules_state: serde_json::Value = http
        .get(format!("{api}/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: Vec<&serde_json::Value> = rules_state["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let defined = std::fs::read_to_string(deploy().join("prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter(|l| l.trim().starts_with("- alert: "))
        .count();
    assert_eq!(loaded.len(), defined, "all alert rules loaded");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{loaded:?}");

    let mut failures = Vec::new();
    for (origin, expr) in expressions() {
        let v: serde_json::Value = http
            .get(format!("{api}/query"))
            .query(&[("query", expr.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // `ingest reconcile --every` and `okta-writer reconcile --every` are commands of their
        // own, not part of the dev pipeline: their series exist only where they run. Their
        // alerts' queries must still be valid here; their firing is unit-tested by promtool.
        let command_only = expr.contains("tierflow_ingest_reconcile_")
            || expr.contains("tierflow_okta_reconcile_");
        if v["status"] != "success" {
            failures.push(format!("{origin}: `{expr}` errors: {}", v["error"]));
        } else if !command_only && v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{origin}: `{expr}` returns no series"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    pipeline.stop().await.unwrap();
}
