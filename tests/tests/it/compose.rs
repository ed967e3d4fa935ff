//! docker-compose.yml cannot be started here (no Docker engine), so it is checked against what
//! it refers to: the Dockerfile's stage and binaries, each service's config (loaded with the
//! compose environment through the services' own config loaders), the config reference in the
//! README, published ports, the Prometheus scrape targets, the topics, and Grafana's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    serde_json::to_value(v).unwrap()
}

/// `${VAR:-default}` → default (what compose uses when VAR is unset); `${VAR:?message}` (a
/// variable compose requires) → a value as an operator would set it.
fn substitute(s: &str) -> String {
    let mut out = s.to_owned();
    while let Some(i) = out.find("${") {
        let j = i + out[i..].find('}').unwrap();
        let inner = &out[i + 2..j];
        let default = match (inner.split_once(":-"), inner.split_once(":?")) {
            (Some((_, d)), _) => d,
            (None, Some(_)) => "operator-set-value",
            (None, None) => "",
        };
        out = format!("{}{}{}", &out[..i], default, &out[j + 1..]);
    }
    out
}

fn env_of(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), substitute(v.as_str().unwrap())))
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn docker_compose_matches_the_dockerfile_the_configs_and_the_docs() {
    let c = compose();
    let services = c["services"].as_object().unwrap();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let config_path = root().join("config/compose.toml");

    for (name, s) in services {
        assert!(
            s.get("image").is_some() || s.get("build").is_some(),
            "{name}: no image or build"
        );
        if let Some(b) = s.get("build") {
            assert!(
                root().join(b["dockerfile"].as_str().unwrap()).exists(),
                "{name}: Dockerfile missing"
            );
            let target = b["target"].as_str().unwrap();
            assert!(
                dockerfile.contains(&format!(" AS {target}")),
                "{name}: no stage {target}"
            );
            let bin = s["command"][0].as_str().unwrap();
            assert!(
                dockerfile.contains(&format!("--bin {bin}")),
                "{name}: the image does not build `{bin}`"
            );
            assert!(
                dockerfile.contains(&format!("/src/target/release/{bin}")),
                "{name}: the image does not ship `{bin}`"
            );
        }
        for (k, _) in env_of(s) {
            if k.starts_with("TIERFLOW_") {
                assert!(
                    readme.contains(&format!("`{k}`"))
                        || readme.contains(&format!("`{}`", k.trim_end_matches("_FILE"))),
                    "{name}: {k} is not in the README's config reference"
                );
            }
        }
        for vol in s["volumes"].as_array().into_iter().flatten() {
            let src = vol.as_str().unwrap().split(':').next().unwrap();
            assert!(
                root().join(src).exists(),
                "{name}: volume source {src} missing"
            );
        }
    }

    // No well-known webhook secret on a published port: compose refuses to start without one.
    let secret = services["ingest"]["environment"]["TIERFLOW_SHOPIFY__WEBHOOK_SECRETS"]
        .as_str()
        .unwrap();
    assert!(
        secret.starts_with("${") && secret.contains(":?"),
        "the ingest's webhook secret must be required, not defaulted: {secret}"
    );

    // Each service's config loads and validates with its compose environment.
    let for_ingest =
        ingest::config::Settings::load(Some(&config_path), env_of(&services["ingest"]), None)
            .expect("ingest config");
    segmenter::config::Settings::load(Some(&config_path), env_of(&services["segmenter"]), None)
        .expect("segmenter config");
    let for_writer = okta_writer::config::Settings::load(
        Some(&config_path),
        env_of(&services["okta-writer"]),
        None,
    )
    .expect("okta-writer config");

    // Published ports are the ones the services listen on; admin ports stay unpublished.
    let published = |name: &str| -> Vec<u16> {
        services[name]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                p.as_str()
                    .unwrap()
                    .split(':')
                    .next_back()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(published("ingest"), [for_ingest.ingest.listen.port()]);
    assert_eq!(published("segmenter"), Vec::<u16>::new());
    assert_eq!(published("okta-writer"), Vec::<u16>::new());
    let sim_cmd: Vec<&str> = services["okta-sim"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let sim_listen = sim_cmd[sim_cmd.iter().position(|a| *a == "--listen").unwrap() + 1];
    assert_eq!(published("okta-sim"), [port_of(sim_listen)]);
    assert_eq!(
        for_writer.base_url().unwrap(),
        format!("http://okta-sim:{}", port_of(sim_listen))
    );
    let sim_token = sim_cmd[sim_cmd.iter().position(|a| *a == "--api-token").unwrap() + 1];
    assert!(env_of(&services["okta-writer"])
        .contains(&("TIERFLOW_OKTA__API_TOKEN".into(), sim_token.into())));

    // Prometheus scrapes every service's admin listener by its compose name.
    let prom: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let targets: Vec<String> = prom["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let for_segmenter =
        segmenter::config::Settings::load(Some(&config_path), Vec::new(), None).unwrap();
    assert_eq!(
        targets,
        [
            format!("ingest:{}", for_ingest.ingest.admin_listen.port()),
            format!("segmenter:{}", for_segmenter.segmenter.admin_listen.port()),
            format!("okta-writer:{}", for_writer.okta_writer.admin_listen.port()),
        ]
    );
    assert_eq!(prom["rule_files"][0], "/etc/prometheus/alerts.yml");
    assert!(services["prometheus"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v
            .as_str()
            .unwrap()
            .ends_with(":/etc/prometheus/alerts.yml:ro")));

    // kafka-init makes every topic the services use with `tierflow topics ensure` (the
    // pipeline's topic list, compaction and co-partitioning live in service_runtime::topics),
    // on the config the services read, in an image that has the command.
    let init: Vec<&str> = services["kafka-init"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&init[..4], ["tierflow", "topics", "ensure", "--execute"]);
    assert_eq!(services["kafka-init"]["image"], services["ingest"]["image"]);
    assert!(dockerfile.contains("/usr/local/bin/") && dockerfile.contains("release/tierflow"));

    // Grafana's datasource uid is the one the dashboard uses.
    let ds: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/provisioning-datasources.yml"))
            .unwrap(),
    )
    .unwrap();
    let dash: Value = serde_json::from_slice(
        &std::fs::read(root().join("deploy/grafana/tierflow.json")).unwrap(),
    )
    .unwrap();
    let uid = ds["datasources"][0]["uid"].as_str().unwrap();
    let used: BTreeMap<&str, ()> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["datasource"]["uid"].as_str().unwrap(), ()))
        .collect();
    assert_eq!(used.keys().copied().collect::<Vec<_>>(), [uid]);
}
