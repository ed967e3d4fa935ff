//! The `tierflow` command's library: the whole pipeline in one process ([`pipeline`]) and what
//! `tierflow dev` shows while it runs ([`status`]), and `tierflow lag` ([`lag_table`]).

pub mod pipeline;
pub mod status;

/// `tierflow lag`: each group's lag per partition as a table (groups as `GROUP:TOPIC`; by
/// default the segmenter's and the writer's).
pub fn lag_table(
    config: &std::path::Path,
    brokers: Option<String>,
    groups: &[String],
) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::fmt::Write;
    let env: Vec<(String, String)> = service_runtime::config::process_env().collect();
    let settings = pipeline::PipelineSettings::load(Some(config), env, brokers)?;
    let bootstrap = settings.for_segmenter.kafka.existing_brokers(
        "pass --brokers: the embedded broker lives inside the running process (use the address it printed)",
    )?;
    let pairs: Vec<(String, String)> = if groups.is_empty() {
        vec![
            (
                settings.for_segmenter.segmenter.group_id.clone(),
                settings.for_segmenter.topics.orders.clone(),
            ),
            (
                settings.for_writer.okta_writer.group_id.clone(),
                settings.for_writer.topics.segments.clone(),
            ),
        ]
    } else {
        groups
            .iter()
            .map(|g| {
                g.split_once(':')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .with_context(|| format!("--group takes GROUP:TOPIC, got {g}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let client =
        service_runtime::kafka::client_config(&settings.for_segmenter.kafka, &bootstrap, &[], &[])?;
    let mut out = String::new();
    writeln!(
        out,
        "{:<24} {:<22} {:>9} {:>12} {:>12} {:>10} {:>12}",
        "group", "topic", "partition", "committed", "end", "lag", "lag seconds"
    )?;
    for (group, topic) in pairs {
        let lags = service_runtime::lag::snapshot(&client, &group, &topic)?;
        let (mut total, mut max) = (0i64, 0.0f64);
        for l in &lags {
            total += l.lag;
            max = max.max(l.lag_seconds);
            let committed = l.committed.map_or("-".to_owned(), |c| c.to_string());
            writeln!(
                out,
                "{group:<24} {topic:<22} {:>9} {committed:>12} {:>12} {:>10} {:>12.1}",
                l.partition, l.end, l.lag, l.lag_seconds
            )?;
        }
        writeln!(
            out,
            "{group:<24} {topic:<22} {:>9} {:>12} {:>12} {total:>10} {max:>12.1}",
            "all", "", ""
        )?;
    }
    Ok(out)
}

/// `tierflow topics ensure`: check every pipeline topic against `layout`, create the missing
/// ones when `execute`; returns the report and whether drift makes the pipeline unable to run.
pub fn topics_ensure(
    config: &std::path::Path,
    brokers: Option<String>,
    layout: service_runtime::topics::Layout,
    execute: bool,
) -> anyhow::Result<(String, bool)> {
    use std::fmt::Write;
    /// Only the shared sections: the topics need no service's settings.
    #[derive(serde::Deserialize)]
    struct View {
        #[serde(default)]
        kafka: service_runtime::config::KafkaConfig,
        #[serde(default)]
        topics: service_runtime::config::TopicsConfig,
    }
    let env: Vec<(String, String)> = service_runtime::config::process_env().collect();
    let mut view: View = service_runtime::config::load(Some(config), env)?;
    if brokers.is_some() {
        view.kafka.brokers = brokers;
    }
    view.topics.validate()?;
    let bootstrap = view
        .kafka
        .existing_brokers("pass --brokers: the embedded broker creates its topics itself")?;
    let client = service_runtime::kafka::client_config(&view.kafka, &bootstrap, &[], &[])?;
    let specs = service_runtime::topics::pipeline_topics(&view.topics, layout);
    let findings = service_runtime::topics::ensure(
        &client,
        &specs,
        execute,
        std::time::Duration::from_secs(15),
    )?;
    let mut out = String::new();
    for f in &findings {
        writeln!(out, "{f}")?;
    }
    let fatal = findings.iter().any(|f| {
        matches!(
            f,
            service_runtime::topics::Finding::Drift { fatal: true, .. }
        )
    });
    Ok((out, fatal))
}
