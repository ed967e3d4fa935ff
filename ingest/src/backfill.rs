//! `ingest backfill`: a shop's order history from the Admin API into `shopify.orders`, so
//! existing customers get their true tier on day one.
//!
//! One GraphQL bulk operation (`bulkOperationRunQuery` over `orders`, `sortKey: UPDATED_AT`,
//! the fields of [`admin_api::ORDER_FIELDS`]) is started and polled; its JSONL result is
//! streamed line by line (never loaded whole) and each order is published through the
//! webhook's record contract: the body rendered in the REST shape of an `orders/updated`
//! webhook ([`rest_body`]), the same key rule, the same headers, plus `tierflow-origin:
//! backfill`. The segmenter's version rule then makes it idempotent: a backfilled version
//! never overwrites a newer webhook version, nor the reverse, and a second backfill changes
//! nothing.
//!
//! Durable: the operation id and the count of lines published are kept in a checkpoint file
//! (`<state_dir>/backfill-<shop>.json`, written atomically after each acknowledged chunk), so
//! a killed backfill resumes where it stopped (at most one chunk is published twice, which the
//! version rule absorbs). A failed or canceled operation is reported and forgotten; an expired
//! one (or an expired result URL) is replaced by a new operation once.
//!
//! A dry run (the default) runs the operation and reads the result but publishes nothing; its
//! operation is kept in the checkpoint, so `--execute` right after reuses it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rdkafka::message::OwnedHeaders;
use schemas::{headers as h, ShopifyTopic};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::admin_api::{self, AdminClient};
use crate::config::Settings;
use crate::publisher::Publisher;

/// What to backfill and how.
#[derive(Debug, Clone)]
pub struct BackfillArgs {
    pub shop: String,
    /// Only orders updated at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Publish; without it, only report what would be published.
    pub execute: bool,
    /// Where the checkpoint file lives.
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    /// Proceed although the app lacks `read_all_orders` (only 60 days of orders are visible).
    pub accept_recent_only: bool,
    /// Lines published (and acknowledged) between checkpoints.
    pub chunk: usize,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What a backfill saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub operation_id: String,
    /// Lines of the result read in this run (after any resumed prefix).
    pub orders: u64,
    /// Lines published to the orders topic in this run (0 on a dry run).
    pub published: u64,
    /// Lines skipped because an earlier run had published them.
    pub resumed_after: u64,
    pub customers: u64,
    pub guest_orders: u64,
    pub test_orders: u64,
    pub cancelled_orders: u64,
    /// Orders by `displayFinancialStatus`.
    pub by_financial_status: BTreeMap<String, u64>,
    /// Lines that could not be rendered as an order (quarantined with their text).
    pub quarantined: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Checkpoint {
    shop: String,
    query: String,
    operation_id: Option<String>,
    /// Lines of that operation's result published and acknowledged.
    lines_done: u64,
}

impl Checkpoint {
    fn path(dir: &Path, shop: &str) -> PathBuf {
        dir.join(format!("backfill-{shop}.json"))
    }

    fn load(dir: &Path, shop: &str) -> anyhow::Result<Option<Checkpoint>> {
        let path = Checkpoint::path(dir, shop);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a backfill checkpoint; move it away to start over",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write atomically: a crash leaves the old checkpoint or the new one, never half of one.
    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = Checkpoint::path(dir, &self.shop);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
    }
}

/// `--since` as the search syntax wants it: a date (`2024-01-31`) or an RFC 3339 time.
pub fn parse_since(s: &str) -> anyhow::Result<String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(format!("{d}T00:00:00Z"));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("--since {s}: use a date (2024-01-31) or an RFC 3339 time"))?;
    Ok(t.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Run a backfill. `bootstrap` is needed only with `execute`.
pub async fn run(
    settings: &Settings,
    bootstrap: Option<&str>,
    args: &BackfillArgs,
) -> anyhow::Result<Summary> {
    let api = settings.admin_api(&args.shop)?;
    let client = AdminClient::new(api)?;
    check_scopes(&client, args.accept_recent_only).await?;
    let publisher = match (args.execute, bootstrap) {
        (true, Some(b)) => Some(publisher(settings, b)?),
        (true, None) => {
            anyhow::bail!("--execute needs a broker: pass --brokers or set [kafka] brokers")
        }
        (false, _) => None,
    };
    let query = admin_api::bulk_orders_query(args.since.as_deref());
    let mut checkpoint = match Checkpoint::load(&args.state_dir, &args.shop)? {
        Some(c) if c.query == query => c,
        Some(c) => {
            tracing::warn!(old = %c.query, "the checkpoint is of another query (another --since); starting a new operation");
            Checkpoint {
                shop: args.shop.clone(),
                query: query.clone(),
                ..Checkpoint::default()
            }
        }
        None => Checkpoint {
            shop: args.shop.clone(),
            query: query.clone(),
            ..Checkpoint::default()
        },
    };
    // An expired operation or result is replaced once; a second expiry in one run is an error.
    for attempt in 0..2 {
        let id = match checkpoint.operation_id.clone() {
            Some(id) => id,
            None => {
                let id = start_operation(&client, &query).await?;
                checkpoint.operation_id = Some(id.clone());
                checkpoint.lines_done = 0;
                checkpoint.save(&args.state_dir)?;
                id
            }
        };
        match finish_operation(&client, &id, args).await? {
            Finished::Gone(why) if attempt == 0 => {
                tracing::warn!(operation = %id, "{why}; starting a new bulk operation");
                checkpoint.operation_id = None;
                continue;
            }
            Finished::Gone(why) => anyhow::bail!("{why} twice in one run; run again"),
            Finished::Ended(why) => {
                checkpoint.operation_id = None;
                checkpoint.lines_done = 0;
                checkpoint.save(&args.state_dir)?;
                anyhow::bail!("{why}");
            }
            Finished::Completed(None) => {
                return Ok(Summary {
                    operation_id: id,
                    ..Summary::default()
                })
            }
            Finished::Completed(Some(url)) => {
                match stream_result(
                    &client,
                    &url,
                    &id,
                    &mut checkpoint,
                    publisher.as_ref(),
                    settings,
                    args,
                )
                .await?
                {
                    Streamed::Done(summary) => {
                        if args.execute {
                            // Done: the next run is a new backfill, not a resumption.
                            checkpoint.operation_id = None;
                            checkpoint.lines_done = 0;
                            checkpoint.save(&args.state_dir)?;
                        }
                        return Ok(summary);
                    }
                    Streamed::Expired if attempt == 0 => {
                        tracing::warn!(operation = %id, "the result URL expired; starting a new bulk operation");
                        checkpoint.operation_id = None;
                        continue;
                    }
                    Streamed::Expired => {
                        anyhow::bail!("the result URL expired twice in one run; run again")
                    }
                }
            }
        }
    }
    unreachable!("the loop returns or fails by its second pass")
}

fn publisher(settings: &Settings, bootstrap: &str) -> anyhow::Result<Publisher> {
    // Not bound by Shopify's 5 s deadline: a backfill can wait for the broker.
    let timeout = Duration::from_secs(30);
    let defaults = crate::publisher::defaults(timeout, 1000, settings.ingest.max_body_bytes);
    let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config =
        service_runtime::kafka::acked_producer_config(&settings.kafka, bootstrap, &defaults)?;
    let registry = prometheus::Registry::new();
    let metrics = crate::metrics::Metrics::register(&registry)?;
    Publisher::new(&config, timeout, metrics).context("creating the Kafka producer")
}

/// Refuse (unless told) an app without `read_all_orders`: Shopify then silently limits every
/// orders query to the last 60 days, and a backfill would look complete while missing years.
async fn check_scopes(client: &AdminClient, accept_recent_only: bool) -> anyhow::Result<()> {
    let data = client.graphql(admin_api::SCOPES_QUERY, json!({})).await?;
    let scopes: BTreeSet<&str> = data["currentAppInstallation"]["accessScopes"]
        .as_array()
        .context("currentAppInstallation.accessScopes missing from Shopify's answer")?
        .iter()
        .filter_map(|s| s["handle"].as_str())
        .collect();
    if !scopes.contains("read_orders") {
        anyhow::bail!(
            "the app lacks the read_orders scope on {} (it has: {}): grant it and run again",
            client.shop(),
            scopes.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    if !scopes.contains("read_all_orders") {
        if accept_recent_only {
            tracing::warn!(shop = client.shop(), "the app lacks read_all_orders: only orders of the last 60 days are visible; proceeding as told (--accept-60-days)");
        } else {
            anyhow::bail!(
                "the app lacks the read_all_orders scope on {}: Shopify would silently limit the history to the last 60 days. Request the scope (Partner Dashboard → app → API access → read_all_orders, then reinstall/approve), or pass --accept-60-days to backfill only those",
                client.shop()
            );
        }
    }
    Ok(())
}

async fn start_operation(client: &AdminClient, query: &str) -> anyhow::Result<String> {
    let data = client
        .graphql(admin_api::RUN_BULK_MUTATION, json!({"query": query}))
        .await?;
    let payload = &data["bulkOperationRunQuery"];
    if let Some(errors) = payload["userErrors"].as_array().filter(|e| !e.is_empty()) {
        let text: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{} ({})",
                    e["message"].as_str().unwrap_or("?"),
                    e["code"].as_str().unwrap_or("no code")
                )
            })
            .collect();
        let in_progress = errors.iter().any(|e| e["code"] == "OPERATION_IN_PROGRESS");
        anyhow::bail!(
            "Shopify refused the bulk operation: {}{}",
            text.join("; "),
            if in_progress {
                ". Only one bulk query runs per app and shop: wait for it to end (or cancel it with bulkOperationCancel) and run again"
            } else {
                ""
            }
        );
    }
    let id = payload["bulkOperation"]["id"]
        .as_str()
        .context("bulkOperationRunQuery answered neither an operation nor userErrors")?;
    tracing::info!(
        operation = id,
        shop = client.shop(),
        "bulk operation started"
    );
    Ok(id.to_owned())
}

enum Finished {
    /// The result URL, or none when the query matched nothing.
    Completed(Option<String>),
    /// Expired or unknown: a new operation can replace it.
    Gone(String),
    /// Failed or canceled: reported to the operator.
    Ended(String),
}

async fn finish_operation(
    client: &AdminClient,
    id: &str,
    args: &BackfillArgs,
) -> anyhow::Result<Finished> {
    let bar = progress_bar(args.progress, None);
    bar.set_message(format!("bulk operation {id}"));
    loop {
        let data = client
            .graphql(admin_api::BULK_STATUS_QUERY, json!({"id": id}))
            .await?;
        let op = &data["bulkOperation"];
        if op.is_null() {
            return Ok(Finished::Gone(format!(
                "bulk operation {id} is unknown to Shopify"
            )));
        }
        let count = op["objectCount"]
            .as_str()
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        bar.set_position(count);
        let status = op["status"].as_str().unwrap_or_default();
        match status {
            "CREATED" | "RUNNING" | "CANCELING" => {}
            "COMPLETED" => {
                bar.finish_and_clear();
                return Ok(Finished::Completed(op["url"].as_str().map(str::to_owned)));
            }
            "EXPIRED" => return Ok(Finished::Gone(format!("bulk operation {id} expired"))),
            "FAILED" => {
                let code = op["errorCode"].as_str().unwrap_or("no errorCode");
                let hint = match code {
                    "ACCESS_DENIED" => "the token lacks a scope the query needs (read_orders, read_customers)",
                    "TIMEOUT" => "the shop's history is too large for one operation: narrow it with --since and run several",
                    _ => "Shopify's side; run again",
                };
                let partial = if op["partialDataUrl"].is_string() {
                    " (a partial result exists; it is not published: the run starts over)"
                } else {
                    ""
                };
                return Ok(Finished::Ended(format!(
                    "bulk operation {id} failed with {code}: {hint}{partial}"
                )));
            }
            "CANCELED" => {
                return Ok(Finished::Ended(format!(
                    "bulk operation {id} was canceled (by another session of the app or by Shopify); run again"
                )))
            }
            other => {
                return Err(admin_api::AdminError::Unexpected(format!(
                    "bulk operation status {other:?}"
                ))
                .into())
            }
        }
        tokio::time::sleep(args.poll_interval).await;
    }
}

fn progress_bar(show: bool, len: Option<u64>) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {pos} orders ({per_sec}) {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

enum Streamed {
    Done(Summary),
    Expired,
}

/// Longest JSONL line accepted (an order with these fields is well under 2 KB).
const MAX_LINE: usize = 1024 * 1024;

#[allow(clippy::too_many_arguments)]
async fn stream_result(
    client: &AdminClient,
    url: &str,
    operation: &str,
    checkpoint: &mut Checkpoint,
    publisher: Option<&Publisher>,
    settings: &Settings,
    args: &BackfillArgs,
) -> anyhow::Result<Streamed> {
    let response = client
        .http()
        .get(url)
        .send()
        .await
        .context("downloading the bulk result")?;
    match response.status().as_u16() {
        200 => {}
        403 | 404 | 410 => return Ok(Streamed::Expired),
        s => anyhow::bail!("downloading the bulk result: HTTP {s}"),
    }
    let op_number = operation.rsplit('/').next().unwrap_or(operation).to_owned();
    let mut summary = Summary {
        operation_id: operation.to_owned(),
        resumed_after: checkpoint.lines_done,
        ..Summary::default()
    };
    let mut customers: BTreeSet<u64> = BTreeSet::new();
    let bar = progress_bar(args.progress, None);
    bar.set_message("publishing".to_owned());
    let mut stream = response.bytes_stream().map_err(std::io::Error::other);
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk: Vec<(u64, Vec<u8>)> = Vec::with_capacity(args.chunk);
    let mut line_no: u64 = 0;
    let mut ended = false;
    while !ended {
        match stream.next().await {
            Some(bytes) => buffer.extend_from_slice(&bytes.context("reading the bulk result")?),
            None => ended = true,
        }
        while let Some(pos) = buffer
            .iter()
            .position(|b| *b == b'\n')
            .or_else(|| (ended && !buffer.is_empty()).then_some(buffer.len()))
        {
            let line: Vec<u8> = buffer.drain(..pos.min(buffer.len())).collect();
            if !buffer.is_empty() {
                buffer.remove(0); // the newline
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            line_no += 1;
            if line_no <= checkpoint.lines_done {
                continue;
            }
            chunk.push((line_no, line));
            if chunk.len() >= args.chunk {
                publish_chunk(
                    &mut chunk,
                    &op_number,
                    checkpoint,
                    publisher,
                    settings,
                    args,
                    &mut summary,
                    &mut customers,
                )
                .await?;
                bar.set_position(summary.orders);
            }
        }
        anyhow::ensure!(
            buffer.len() <= MAX_LINE,
            "a line of the bulk result is longer than {MAX_LINE} bytes: not an order line"
        );
    }
    publish_chunk(
        &mut chunk,
        &op_number,
        checkpoint,
        publisher,
        settings,
        args,
        &mut summary,
        &mut customers,
    )
    .await?;
    bar.finish_and_clear();
    summary.customers = customers.len() as u64;
    Ok(Streamed::Done(summary))
}

#[allow(clippy::too_many_arguments)]
async fn publish_chunk(
    chunk: &mut Vec<(u64, Vec<u8>)>,
    op_number: &str,
    checkpoint: &mut Checkpoint,
    publisher: Option<&Publisher>,
    settings: &Settings,
    args: &BackfillArgs,
    summary: &mut Summary,
    customers: &mut BTreeSet<u64>,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut records = Vec::with_capacity(chunk.len());
    for (line_no, line) in chunk.iter() {
        summary.orders += 1;
        let webhook_id = format!("backfill-{op_number}-{line_no}");
        let parsed = serde_json::from_slice::<Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                tally(&v, summary, customers);
                rest_body(&v)
            });
        let record = match parsed.and_then(|body| {
            schemas::record_key(&args.shop, ShopifyTopic::OrdersUpdated, &body)
                .map(|key| (key.to_string(), body))
                .map_err(|e| e.to_string())
        }) {
            Ok((key, body)) => (settings.topics.orders.clone(), "orders", key, body, None),
            Err(why) => {
                tracing::warn!(line = line_no, error = %why, "a bulk result line is not a readable order; quarantining it");
                summary.quarantined += 1;
                (
                    settings.topics.orders_quarantine.clone(),
                    "quarantine",
                    args.shop.clone(),
                    line.clone(),
                    Some(why),
                )
            }
        };
        records.push((webhook_id, record));
    }
    if let Some(publisher) = publisher {
        // Collected first: a stream over a borrowing closure trips the compiler's
        // higher-ranked lifetime check when the future must be Send.
        let mut sends = Vec::with_capacity(records.len());
        for (webhook_id, (topic, dest, key, body, why)) in &records {
            let headers = backfill_headers(&args.shop, webhook_id, &received_at, why.as_deref());
            sends.push(publisher.publish(dest, topic, key, body, headers));
        }
        let results: Vec<Result<(), crate::publisher::PublishError>> = futures::stream::iter(sends)
            .buffer_unordered(512)
            .collect()
            .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            anyhow::bail!(
                "publishing to Kafka failed ({e}); {} lines of this operation are acknowledged and checkpointed: run again to resume",
                checkpoint.lines_done
            );
        }
        summary.published += records.len() as u64;
        checkpoint.lines_done = chunk.last().map_or(checkpoint.lines_done, |(n, _)| *n);
        checkpoint.save(&args.state_dir)?;
    }
    chunk.clear();
    Ok(())
}

fn tally(v: &Value, summary: &mut Summary, customers: &mut BTreeSet<u64>) {
    match v["customer"]["legacyResourceId"]
        .as_str()
        .and_then(|c| c.parse::<u64>().ok())
    {
        Some(c) => {
            customers.insert(c);
        }
        None => summary.guest_orders += 1,
    }
    if v["test"] == true {
        summary.test_orders += 1;
    }
    if v["cancelledAt"].is_string() {
        summary.cancelled_orders += 1;
    }
    let status = v["displayFinancialStatus"].as_str().unwrap_or("NONE");
    *summary
        .by_financial_status
        .entry(status.to_owned())
        .or_default() += 1;
}

fn backfill_headers(
    shop: &str,
    webhook_id: &str,
    received_at: &str,
    quarantine: Option<&str>,
) -> OwnedHeaders {
    service_runtime::kafka::with_headers(
        OwnedHeaders::new_with_capacity(8),
        &[
            (h::SHOPIFY_TOPIC, Some(ShopifyTopic::OrdersUpdated.as_str())),
            (h::SHOPIFY_SHOP_DOMAIN, Some(shop)),
            (h::SHOPIFY_WEBHOOK_ID, Some(webhook_id)),
            (
                h::SHOPIFY_API_VERSION,
                Some(crate::config::ADMIN_API_VERSION),
            ),
            (h::RECEIVED_AT, Some(received_at)),
            (h::ORIGIN, Some("backfill")),
            (
                h::QUARANTINE_REASON,
                quarantine.map(|_| "backfill_unreadable"),
            ),
        ],
    )
}

/// Render one bulk result line (the node of [`admin_api::ORDER_FIELDS`]) as the REST body of
/// an `orders/updated` webhook: numeric ids, snake case, lower-case enum values, tags as one
/// comma-separated string — what the segmenter reads from a webhook, so both normalise alike.
pub fn rest_body(v: &Value) -> Result<Vec<u8>, String> {
    let id: u64 = v["legacyResourceId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no legacyResourceId")?;
    let updated_at = v["updatedAt"].as_str().ok_or("no updatedAt")?;
    let money = &v["currentTotalPriceSet"]["shopMoney"];
    let amount = money["amount"]
        .as_str()
        .ok_or("no currentTotalPriceSet.shopMoney.amount")?;
    let currency = money["currencyCode"]
        .as_str()
        .ok_or("no shopMoney.currencyCode")?;
    let lower = |x: &Value| x.as_str().map(str::to_ascii_lowercase);
    let customer = match &v["customer"] {
        Value::Null => Value::Null,
        c => {
            let cid: u64 = c["legacyResourceId"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("customer without legacyResourceId")?;
            let tags: Vec<&str> = c["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let email = &c["defaultEmailAddress"];
            json!({
                "id": cid,
                "admin_graphql_api_id": c["id"],
                "email": email["emailAddress"],
                "tags": tags.join(", "),
                "email_marketing_consent": lower(&email["marketingState"]).map(|s| json!({"state": s})),
            })
        }
    };
    let money = json!({"amount": amount, "currency_code": currency});
    let body = json!({
        "id": id,
        "admin_graphql_api_id": v["id"],
        "name": v["name"],
        "email": v["email"],
        "created_at": v["createdAt"],
        "updated_at": updated_at,
        "cancelled_at": v["cancelledAt"],
        "test": v["test"].as_bool().unwrap_or(false),
        "financial_status": lower(&v["displayFinancialStatus"]),
        "currency": currency,
        "current_total_price": amount,
        "current_total_price_set": {"shop_money": money, "presentment_money": money},
        "customer": customer,
    });
    Ok(body.to_string().into_bytes())
}

/// The summary an operator reads at the end.
pub fn report(s: &Summary, executed: bool) -> String {
    let statuses: Vec<String> = s
        .by_financial_status
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "{} {}: {} orders read ({} resumed past), {} customers, {} guest orders, {} test, {} cancelled; by financial status: {}; {} quarantined; {}",
        if executed { "backfilled" } else { "dry run of" },
        s.operation_id,
        s.orders,
        s.resumed_after,
        s.customers,
        s.guest_orders,
        s.test_orders,
        s.cancelled_orders,
        if statuses.is_empty() { "none".to_owned() } else { statuses.join(", ") },
        s.quarantined,
        if executed {
            format!("{} published to the orders topic", s.published)
        } else {
            "nothing published (run again with --execute; the same operation is reused)".to_owned()
        }
    )
}
