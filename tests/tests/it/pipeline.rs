//! The whole pipeline in one process (the same code `tierflow dev` runs): signed webhooks in
//! over HTTP, the Okta simulator out, compared with a reference computed independently.
//! Then the status page, rendered by headless Chromium, must show the pipeline's numbers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::Broker;
use tests::*;
use tierflow::status;

fn dev_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml")
}

fn chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("headless Chromium is needed for the status page test: run scripts/install-test-deps.sh (Debian package `chromium`)");
}

/// The page's DOM after its scripts ran for a few seconds, and a screenshot.
fn render(url: &str, screenshot: &Path) -> String {
    let profile = tempfile_dir();
    let base = |c: &mut std::process::Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    };
    let mut shot = std::process::Command::new(chromium());
    base(&mut shot);
    let out = shot
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--window-size=1000,1100")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dom = std::process::Command::new(chromium());
    base(&mut dom);
    let out = dom.arg("--dump-dom").arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tierflow-e2e-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let from = start + dom[start..].find('>').unwrap() + 1;
    let to = from + dom[from..].find('<').unwrap();
    dom[from..to].trim().to_owned()
}

fn number(s: &str) -> f64 {
    s.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_webhooks_end_as_exact_okta_state_and_the_status_page_shows_it() {
    let _heavy = testkit::heavy().await;
    let broker = Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let pipeline = start_pipeline(&bootstrap, |_| {}).await;
    let history = history(150, 11);
    let want = reference(&history);
    for u in okta_users(&customers(&history)) {
        pipeline.sim.add_user(&u).unwrap();
    }
    let data: status::Shared = Arc::new(Mutex::new(status::StatusData::default()));
    let (status_addr, status_task) = status::serve(
        "127.0.0.1:0".parse().unwrap(),
        data.clone(),
        pipeline.stopped(),
    )
    .await
    .unwrap();
    let collector = tokio::spawn(status::collect(
        data.clone(),
        pipeline.endpoints.clone(),
        pipeline.sim.clone(),
        pipeline.stopped(),
    ));
    let tail = tokio::spawn(status::tail_tier_changes(
        data.clone(),
        bootstrap.clone(),
        "customer.segments".into(),
        pipeline.stopped(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let deliveries = deliveries(&history, 11);
    let accepted = deliver(pipeline.endpoints.webhooks, &deliveries).await;
    assert_eq!(accepted, deliveries.len());
    let sim = pipeline.sim.clone();
    eventually(Duration::from_secs(120), || okta_mismatches(&sim, &want)).await;
    // The guest has no Okta user and got none.
    assert!(sim.profile(&email(0)).is_none());

    // Let the collector see the settled pipeline, then render the page.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last = data.lock().unwrap().samples.back().cloned().unwrap();
    assert_eq!(last.webhooks_accepted as usize, deliveries.len());
    assert_eq!(last.dead_letters, 0.0);
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-status-page.png");
    let dom = render(&format!("http://{status_addr}/"), &screenshot);
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot was saved"
    );
    assert_eq!(number(&text_of(&dom, "accepted")), deliveries.len() as f64);
    assert_eq!(number(&text_of(&dom, "updates")), last.segment_updates);
    assert_eq!(number(&text_of(&dom, "applied")), last.okta_applied);
    assert_eq!(number(&text_of(&dom, "dead-letters")), 0.0);
    // Settled: the writer's lag is (about) gone, so the forecast is a figure, not a placeholder.
    let drain = text_of(&dom, "drain");
    assert!(
        drain == "none" || drain.ends_with(" s") || drain.ends_with(" min"),
        "drain forecast shown as {drain:?}"
    );
    // The tier table shows the simulator's group sizes, which match the reference.
    for group in [
        "Shopify Potential",
        "Shopify New",
        "Shopify Active",
        "Shopify VIP",
    ] {
        let expected = want.values().filter(|(t, _)| tier(*t) == group).count();
        let row = format!("<td>{group}</td><td>{expected}</td>");
        assert!(dom.contains(&row), "the page should show {row}");
    }
    // The latest tier changes are listed with their causing order ids.
    let changes = data.lock().unwrap().tier_changes.clone();
    assert!(!changes.is_empty(), "the tail saw tier changes");
    for c in changes.iter().take(5) {
        let order = c.order_id.as_deref().unwrap();
        assert!(
            dom.contains(&format!("<td>{order}</td>")),
            "the page lists the change caused by order {order}"
        );
    }

    // `tierflow lag`: both groups caught up, every partition listed.
    let b = bootstrap.clone();
    let table = tokio::task::spawn_blocking(move || {
        tierflow::lag_table(&dev_toml(), Some(b), &[]).unwrap()
    })
    .await
    .unwrap();
    for group in ["tierflow-segmenter", "tierflow-okta-writer"] {
        let all = table
            .lines()
            .find(|l| l.starts_with(group) && l.contains(" all "))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            all.split_whitespace().nth(3) == Some("0"),
            "{group} caught up: {table}"
        );
        assert_eq!(
            table.lines().filter(|l| l.starts_with(group)).count(),
            7,
            "6 partitions + total: {table}"
        );
    }
    // The services export the same lag.
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        pipeline.endpoints.writer_admin
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for name in [
        "kafka_consumergroup_lag{",
        "kafka_consumergroup_current_offset{",
        "kafka_consumergroup_lag_sum{",
        "kafka_consumergroup_group_lag_seconds{",
        "kafka_consumergroup_group_max_lag_seconds{",
    ] {
        assert!(metrics.contains(name), "the writer exports {name}");
    }

    pipeline.stop().await.unwrap();
    collector.await.unwrap();
    tail.await.unwrap().unwrap();
    status_task.await.unwrap().unwrap();
}

/// `tierflow dev --load` signs its traffic with a secret the ingest accepts, also when the only
/// secret comes from `webhook_secrets_file` (it used to take the first inline one only).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_load_traffic_is_signed_with_a_secret_from_the_secrets_file() {
    let broker = Broker::from_env(6);
    let bootstrap = broker.bootstrap_servers();
    let secrets = tempfile_dir().join("webhook-secrets");
    std::fs::write(&secrets, "# rotated 2026-11\nfile-only-secret\n").unwrap();
    let mut settings = tierflow::pipeline::PipelineSettings::load(
        Some(&dev_toml()),
        Vec::new(),
        Some(bootstrap.clone()),
    )
    .unwrap();
    settings.for_ingest.shopify.webhook_secrets.clear();
    settings.for_ingest.shopify.webhook_secrets_file = Some(secrets);
    let options = tierflow::pipeline::DevOptions {
        users: 50,
        customers: 50,
        load: Some(50.0),
        ephemeral_ports: true,
        okta_unthrottled: true,
        ..Default::default()
    };
    let pipeline = tierflow::pipeline::Pipeline::start(settings, &bootstrap, &options)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let sample = loop {
        let s = status::scrape(&http, &pipeline.endpoints).await;
        if s.webhooks_accepted >= 25.0 || started.elapsed() > Duration::from_secs(30) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        sample.webhooks_accepted >= 25.0,
        "loadgen traffic accepted: {sample:?}"
    );
    assert_eq!(sample.webhooks_rejected, 0.0, "{sample:?}");
    pipeline.stop().await.unwrap();
}
