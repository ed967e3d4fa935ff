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
//! (`<state_dir>/backfill-<shop>.json`, written atomically every `chunk` acknowledged lines;
//! acknowledgements are taken in line order, so everything before the checkpoint is in Kafka),
//! so a killed backfill resumes where it stopped. What was sent after the last checkpoint
//! (at most `chunk` + [`MAX_IN_FLIGHT`] records) is published again, which the version rule
//! absorbs. A failed or canceled operation is reported and forgotten; an expired
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
use crate::tier_moves::{self, TierReport};

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
    /// Report the customers' tiers before → after (read from the segments topic), waiting up
    /// to this long for the segmenter to consume what was published; `None`: no tier report.
    pub tiers_wait: Option<Duration>,
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
    /// The customers' tiers before → after (with a broker and `tiers_wait`).
    pub tiers: Option<TierReport>,
    /// The customers of the result (of resumed lines too), for the tier report.
    #[serde(skip)]
    pub customer_ids: BTreeSet<u64>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
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

/// Run a backfill. `bootstrap` is needed only with `execute`; with it and `tiers_wait`, the
/// summary also tells the customers' tiers before → after.
pub async fn run(
    settings: &Settings,
    bootstrap: Option<&str>,
    args: &BackfillArgs,
) -> anyhow::Result<Summary> {
    let tiers = match (bootstrap, args.tiers_wait) {
        (Some(b), Some(wait)) => {
            let (s, b2, shop) = (settings.clone(), b.to_owned(), args.shop.clone());
            // Not being able to tell tiers never stops a backfill: it is a report.
            match tokio::task::spawn_blocking(move || tier_moves::read(&s, &b2, &shop)).await? {
                Ok(before) => Some((b, wait, before)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the customers' tiers from the segments topic; the summary will not tell tiers before → after");
                    None
                }
            }
        }
        _ => None,
    };
    let mut summary = run_operation(settings, bootstrap, args).await?;
    if let Some((b, wait, before)) = tiers {
        let ids = &summary.customer_ids;
        match tier_moves::report(settings, b, &args.shop, before, ids, args.execute, wait).await {
            Ok(report) => summary.tiers = Some(report),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the customers' tiers after the backfill")
            }
        }
    }
    Ok(summary)
}

async fn run_operation(
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
    let search = args.since.as_deref().map(|s| format!("updated_at:>='{s}'"));
    let query = admin_api::bulk_orders_query(search.as_deref());
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
        match finish_operation(&client, &id, args.poll_interval, args.progress).await? {
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
                        let summary = *summary;
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

/// Cancel the bulk operation of this shop's checkpoint (a backfill stopped while Shopify still
/// runs its operation holds the app's one bulk slot on the shop until it ends) and forget it,
/// so the next run starts a new one. Returns what was done, for the operator.
pub async fn cancel(settings: &Settings, shop: &str, state_dir: &Path) -> anyhow::Result<String> {
    let Some(mut checkpoint) = Checkpoint::load(state_dir, shop)? else {
        anyhow::bail!(
            "no backfill checkpoint for {shop} in {}: there is no operation of tierflow's to cancel",
            state_dir.display()
        );
    };
    let Some(id) = checkpoint.operation_id.clone() else {
        anyhow::bail!("the checkpoint of {shop} holds no bulk operation: nothing to cancel");
    };
    let client = AdminClient::new(settings.admin_api(shop)?)?;
    let data = client
        .graphql(admin_api::CANCEL_BULK_MUTATION, json!({"id": id}))
        .await?;
    let payload = &data["bulkOperationCancel"];
    let errors: Vec<&str> = payload["userErrors"]
        .as_array()
        .context("bulkOperationCancel.userErrors missing from Shopify's answer")?
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("?"))
        .collect();
    let status = payload["bulkOperation"]["status"].as_str();
    let outcome = match (errors.as_slice(), status) {
        // Canceling is asynchronous: CANCELING, then CANCELED.
        ([], Some(status)) => format!("bulk operation {id} is {status}"),
        // Already over (completed, failed, expired): nothing holds the slot.
        ([first, ..], Some(status)) => format!("bulk operation {id} is {status}: {first}"),
        // Unknown to Shopify (expired long ago, or another shop's id).
        ([first, ..], None) => format!("bulk operation {id}: {first}"),
        ([], None) => {
            return Err(admin_api::AdminError::Unexpected(
                "bulkOperationCancel answered neither an operation nor userErrors".into(),
            )
            .into())
        }
    };
    checkpoint.operation_id = None;
    checkpoint.lines_done = 0;
    checkpoint.save(state_dir)?;
    Ok(format!(
        "{outcome}; the checkpoint forgot it, the next backfill starts a new operation"
    ))
}

pub(crate) fn publisher(settings: &Settings, bootstrap: &str) -> anyhow::Result<Publisher> {
    // Not bound by Shopify's 5 s deadline: a backfill can wait for the broker.
    let timeout = Duration::from_secs(30);
    // The producer queue holds twice what may be in flight: never `QueueFull`.
    let defaults =
        crate::publisher::defaults(timeout, MAX_IN_FLIGHT, settings.ingest.max_body_bytes);
    let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config =
        service_runtime::kafka::acked_producer_config(&settings.kafka, bootstrap, &defaults)?;
    let registry = prometheus::Registry::new();
    let metrics = crate::metrics::Metrics::register(&registry)?;
    Publisher::new(&config, timeout, metrics).context("creating the Kafka producer")
}

/// Refuse (unless told) an app without `read_all_orders`: Shopify then silently limits every
/// orders query to the last 60 days, and a backfill would look complete while missing years.
pub(crate) async fn check_scopes(
    client: &AdminClient,
    accept_recent_only: bool,
) -> anyhow::Result<()> {
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

/// Shopify's `userErrors` on `bulkOperationRunQuery`.
#[derive(Debug, thiserror::Error)]
#[error("Shopify refused the bulk operation: {text}{}", if *.in_progress { ". Only one bulk query runs per app and shop: wait for it to end and run again, or, if it is a stopped backfill of tierflow's, cancel it with `ingest backfill --shop <shop> --cancel`" } else { "" })]
pub struct BulkRefused {
    pub text: String,
    /// `OPERATION_IN_PROGRESS`: another bulk query of this app runs on the shop.
    pub in_progress: bool,
}

pub(crate) async fn start_operation(client: &AdminClient, query: &str) -> anyhow::Result<String> {
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
        return Err(BulkRefused {
            text: text.join("; "),
            in_progress: errors.iter().any(|e| e["code"] == "OPERATION_IN_PROGRESS"),
        }
        .into());
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

pub(crate) enum Finished {
    /// The result URL, or none when the query matched nothing.
    Completed(Option<String>),
    /// Expired or unknown: a new operation can replace it.
    Gone(String),
    /// Failed or canceled: reported to the operator.
    Ended(String),
}

pub(crate) async fn finish_operation(
    client: &AdminClient,
    id: &str,
    poll_interval: Duration,
    progress: bool,
) -> anyhow::Result<Finished> {
    let bar = progress_bar(progress, None);
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
        tokio::time::sleep(poll_interval).await;
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
    Done(Box<Summary>),
    Expired,
}

/// Longest JSONL line accepted (an order with these fields is well under 2 KB).
const MAX_LINE: usize = 1024 * 1024;
/// Records awaiting the broker's acknowledgement at once.
pub const MAX_IN_FLIGHT: usize = 2000;

pub(crate) type Acked<'p> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (u64, Result<(), crate::publisher::PublishError>)>
            + Send
            + 'p,
    >,
>;

/// The publishing side of a run: records go out with up to [`MAX_IN_FLIGHT`] awaiting
/// acknowledgement; acknowledgements are taken in line order, so the checkpoint can advance
/// to the last line before which everything is acknowledged, every `chunk` lines.
pub(crate) struct Sender<'a> {
    pub(crate) publisher: Option<&'a Publisher>,
    pub(crate) settings: &'a Settings,
    pub(crate) shop: &'a str,
    /// `tierflow-origin`: `backfill` or `reconcile`.
    pub(crate) origin: &'static str,
    /// `x-shopify-webhook-id` is `<id_prefix>-<line>`.
    pub(crate) id_prefix: String,
    pub(crate) received_at: String,
    pub(crate) in_flight: futures::stream::FuturesOrdered<Acked<'a>>,
    /// Advanced (and saved every `chunk` lines) as lines are acknowledged, when resumable.
    pub(crate) checkpoint: Option<(&'a mut Checkpoint, &'a Path)>,
    pub(crate) chunk: u64,
    pub(crate) saved_at: u64,
    pub(crate) summary: Summary,
    pub(crate) customers: BTreeSet<u64>,
}

impl<'a> Sender<'a> {
    pub(crate) async fn line(&mut self, line_no: u64, line: &[u8]) -> anyhow::Result<()> {
        self.summary.orders += 1;
        let webhook_id = format!("{}-{line_no}", self.id_prefix);
        let parsed = serde_json::from_slice::<Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                tally(&v, &mut self.summary, &mut self.customers);
                rest_body(&v)
            })
            .and_then(|body| {
                schemas::record_key(self.shop, ShopifyTopic::OrdersUpdated, &body)
                    .map(|key| (key.to_string(), body))
                    .map_err(|e| e.to_string())
            });
        let (topic, destination, key, body, why) = match parsed {
            Ok((key, body)) => (&self.settings.topics.orders, "orders", key, body, None),
            Err(why) => {
                tracing::warn!(line = line_no, error = %why, "a bulk result line is not a readable order; quarantining it");
                self.summary.quarantined += 1;
                let topic = &self.settings.topics.orders_quarantine;
                (
                    topic,
                    "quarantine",
                    self.shop.to_owned(),
                    line.to_vec(),
                    Some(why),
                )
            }
        };
        let Some(publisher) = self.publisher else {
            return Ok(());
        };
        let headers = record_headers(
            self.shop,
            self.origin,
            &webhook_id,
            &self.received_at,
            why.is_some(),
        );
        let topic = topic.clone();
        self.in_flight.push_back(Box::pin(async move {
            let r = publisher
                .publish(destination, &topic, &key, &body, headers)
                .await;
            (line_no, r)
        }));
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_one().await?;
        }
        Ok(())
    }

    /// Take the oldest acknowledgement; checkpoint every `chunk` lines.
    async fn settle_one(&mut self) -> anyhow::Result<()> {
        let Some((line_no, result)) = self.in_flight.next().await else {
            return Ok(());
        };
        if let Err(e) = result {
            let Some((checkpoint, dir)) = self.checkpoint.as_mut() else {
                anyhow::bail!("publishing to Kafka failed at line {line_no} ({e}); run again");
            };
            // Everything before this line is acknowledged: keep that much.
            checkpoint.save(dir)?;
            anyhow::bail!(
                "publishing to Kafka failed at line {line_no} ({e}); {} lines of this operation are acknowledged and checkpointed: run again to resume",
                checkpoint.lines_done
            );
        }
        self.summary.published += 1;
        if let Some((checkpoint, dir)) = self.checkpoint.as_mut() {
            checkpoint.lines_done = line_no;
            if line_no - self.saved_at >= self.chunk {
                checkpoint.save(dir)?;
                self.saved_at = line_no;
            }
        }
        Ok(())
    }

    pub(crate) async fn finish(mut self) -> anyhow::Result<Summary> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        if let (Some(_), Some((checkpoint, dir))) = (self.publisher, self.checkpoint.as_mut()) {
            checkpoint.save(dir)?;
        }
        self.summary.customers = self.customers.len() as u64;
        self.summary.customer_ids = self.customers;
        Ok(self.summary)
    }
}

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
    let resume_after = checkpoint.lines_done;
    let op_number = operation.rsplit('/').next().unwrap_or(operation);
    let mut sender = Sender {
        publisher,
        settings,
        shop: &args.shop,
        origin: "backfill",
        id_prefix: format!("backfill-{op_number}"),
        received_at: now_rfc3339(),
        in_flight: futures::stream::FuturesOrdered::new(),
        saved_at: resume_after,
        checkpoint: Some((checkpoint, args.state_dir.as_path())),
        chunk: args.chunk as u64,
        summary: Summary {
            operation_id: operation.to_owned(),
            resumed_after: resume_after,
            ..Summary::default()
        },
        customers: BTreeSet::new(),
    };
    if !stream_lines(client, url, resume_after, &mut sender, args.progress).await? {
        return Ok(Streamed::Expired);
    }
    Ok(Streamed::Done(Box::new(sender.finish().await?)))
}

/// Download a bulk result from `url` and hand each line after `resume_after` to `sender`
/// (the lines up to it only count their customer). `false`: the URL has expired.
pub(crate) async fn stream_lines(
    client: &AdminClient,
    url: &str,
    resume_after: u64,
    sender: &mut Sender<'_>,
    progress: bool,
) -> anyhow::Result<bool> {
    let response = client
        .http()
        .get(url)
        .send()
        .await
        .context("downloading the bulk result")?;
    match response.status().as_u16() {
        200 => {}
        403 | 404 | 410 => return Ok(false),
        s => anyhow::bail!("downloading the bulk result: HTTP {s}"),
    }
    let bar = progress_bar(progress, None);
    bar.set_message("publishing".to_owned());
    let mut stream = response.bytes_stream().map_err(std::io::Error::other);
    let mut buffer: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    let mut ended = false;
    while !ended {
        match stream.next().await {
            Some(bytes) => buffer.extend_from_slice(&bytes.context("reading the bulk result")?),
            None => ended = true,
        }
        // Every complete line of the buffer, then the rest kept for the next network chunk
        // (one shift per chunk, not per line).
        let mut start = 0;
        loop {
            let (end, next) = match buffer[start..].iter().position(|b| *b == b'\n') {
                Some(pos) => (start + pos, start + pos + 1),
                None if ended && start < buffer.len() => (buffer.len(), buffer.len()),
                None => break,
            };
            let line = &buffer[start..end];
            start = next;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            line_no += 1;
            if line_no <= resume_after {
                // Published by an earlier run; its customer still belongs in the tier report.
                if let Some(c) = serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|v| customer_of(&v))
                {
                    sender.customers.insert(c);
                }
                continue;
            }
            sender.line(line_no, line).await?;
            if line_no % 1000 == 0 {
                bar.set_position(sender.summary.orders);
            }
        }
        buffer.drain(..start);
        anyhow::ensure!(
            buffer.len() <= MAX_LINE,
            "a line of the bulk result is longer than {MAX_LINE} bytes: not an order line"
        );
    }
    bar.finish_and_clear();
    Ok(true)
}

/// The customer id of a bulk result line (`None`: a guest order).
fn customer_of(v: &Value) -> Option<u64> {
    v["customer"]["legacyResourceId"]
        .as_str()
        .and_then(|c| c.parse::<u64>().ok())
}

fn tally(v: &Value, summary: &mut Summary, customers: &mut BTreeSet<u64>) {
    match customer_of(v) {
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

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn record_headers(
    shop: &str,
    origin: &'static str,
    webhook_id: &str,
    received_at: &str,
    quarantined: bool,
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
            (h::ORIGIN, Some(origin)),
            (
                h::QUARANTINE_REASON,
                quarantined.then_some(if origin == "backfill" {
                    "backfill_unreadable"
                } else {
                    "reconcile_unreadable"
                }),
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
    let tiers = s
        .tiers
        .as_ref()
        .map(|t| format!("\n{}", t.render()))
        .unwrap_or_default();
    format!(
        "{} {}: {} orders read ({} resumed past), {} customers, {} guest orders, {} test, {} cancelled; by financial status: {}; {} quarantined; {}{tiers}",
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
