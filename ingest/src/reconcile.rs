//! `ingest reconcile`: catch what webhooks missed. Shopify never replays a dropped webhook (8
//! retries over 4 hours, then it is gone), and tells apps to reconcile: this sweeps the orders
//! updated since a watermark (minus an overlap, for updates committed late) and publishes each
//! through the same path as the backfill (`tierflow-origin: reconcile`). The window is counted
//! first (`ordersCount`): up to `bulk_above` orders it is read page by page, beyond that with
//! one bulk operation (pages cost query points per order; a bulk query does not), or page by
//! page after all when another bulk query of the app (a backfill) holds the shop's one slot.
//!
//! Nothing here decides what was missed: the segmenter does, because only it knows what it has.
//! A reconcile record whose version is new to its ledger is a webhook that never arrived; it
//! counts `tierflow_segmenter_missed_webhooks_total` (alert `TierflowMissedWebhooks`). A
//! version it already has is a duplicate and changes nothing.
//!
//! The watermark (`<state_dir>/reconcile-<shop>.json`) advances to the sweep's upper bound
//! (its start time) only after every page was read and every record acknowledged; a failed
//! sweep leaves it where it was, so the next one covers the same window again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::admin_api::{self, AdminClient};
use crate::backfill::{self, Sender, Summary};
use crate::config::Settings;

#[derive(Debug, Clone)]
pub struct ReconcileArgs {
    pub shop: String,
    /// Where to start when there is no watermark yet (RFC 3339).
    pub since: Option<String>,
    /// How far before the watermark each sweep starts again.
    pub overlap: Duration,
    pub execute: bool,
    pub state_dir: PathBuf,
    /// Also list the app's webhook subscriptions and report the accepted topics without one.
    pub check_subscriptions: bool,
    /// A window with more orders than this is read with one bulk operation instead of pages.
    pub bulk_above: u64,
    /// How often a bulk operation's status is polled.
    pub poll_interval: Duration,
}

/// What one sweep covered and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sweep {
    pub from: String,
    pub to: String,
    pub pages: u64,
    /// The bulk operation that read the window (a large window), if one did.
    pub bulk_operation: Option<String>,
    pub orders: Summary,
    /// Topics the ingest accepts that the shop has no webhook subscription for (with
    /// `check_subscriptions`).
    pub missing_subscriptions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Watermark {
    shop: String,
    /// Orders updated before this time are reconciled.
    watermark: String,
}

fn path(dir: &Path, shop: &str) -> PathBuf {
    dir.join(format!("reconcile-{shop}.json"))
}

fn load(dir: &Path, shop: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    let p = path(dir, shop);
    match std::fs::read(&p) {
        Ok(bytes) => {
            let w: Watermark = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a reconcile watermark", p.display()))?;
            let t = DateTime::parse_from_rfc3339(&w.watermark)
                .with_context(|| format!("{}: watermark {}", p.display(), w.watermark))?;
            Ok(Some(t.with_timezone(&Utc)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save(dir: &Path, shop: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = path(dir, shop);
    let tmp = p.with_extension("json.tmp");
    let w = Watermark {
        shop: shop.to_owned(),
        watermark: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    std::fs::write(&tmp, serde_json::to_vec_pretty(&w)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("replacing {}", p.display()))
}

/// One sweep: the orders updated in `[watermark − overlap, now]`, published (with `execute`),
/// then the watermark moved to `now`. A dry run reads and reports only.
pub async fn sweep(
    settings: &Settings,
    bootstrap: Option<&str>,
    args: &ReconcileArgs,
    client: &AdminClient,
) -> anyhow::Result<Sweep> {
    let to = Utc::now();
    let from = match load(&args.state_dir, &args.shop)? {
        Some(w) => w - chrono::Duration::from_std(args.overlap).unwrap_or_default(),
        None => {
            let since = args.since.as_deref().context(
                "no reconcile watermark for this shop yet: pass --since (the time your backfill or your webhooks start from)",
            )?;
            DateTime::parse_from_rfc3339(&backfill::parse_since(since)?)?.with_timezone(&Utc)
        }
    };
    // Windows reaching back past 60 days need read_all_orders, or Shopify silently omits the
    // older orders.
    let recent = from > to - chrono::Duration::days(59);
    backfill::check_scopes(client, recent).await?;
    let publisher = match (args.execute, bootstrap) {
        (true, Some(b)) => Some(backfill::publisher(settings, b)?),
        (true, None) => anyhow::bail!("--execute needs a broker: pass --brokers"),
        (false, _) => None,
    };
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let search = format!(
        "updated_at:>='{}' AND updated_at:<='{}'",
        fmt(from),
        fmt(to)
    );
    let mut sender = Sender {
        publisher: publisher.as_ref(),
        settings,
        shop: &args.shop,
        origin: "reconcile",
        id_prefix: format!("reconcile-{}", to.timestamp()),
        received_at: backfill::now_rfc3339(),
        in_flight: futures::stream::FuturesOrdered::new(),
        checkpoint: None,
        chunk: u64::MAX,
        saved_at: 0,
        summary: Summary::default(),
        customers: Default::default(),
    };
    // Pages of 250 cost about 1,000 points each against a bucket that refills at 100 a
    // second (Standard plan): a window of many thousand orders (after an outage, or a flash
    // sale) reads far faster as one bulk operation, which costs no points per order.
    let counted = client
        .graphql(
            admin_api::ORDERS_COUNT_QUERY,
            json!({"query": search, "limit": args.bulk_above.saturating_add(1)}),
        )
        .await?;
    let count = counted["ordersCount"]["count"]
        .as_u64()
        .context("ordersCount.count missing from Shopify's answer")?;
    let mut bulk_operation = None;
    let mut pages = 0;
    if count > args.bulk_above {
        match bulk_window(client, &search, &mut sender, args).await {
            Ok(id) => bulk_operation = Some(id),
            // Another bulk query of the app (a backfill) holds the shop's one slot: page.
            Err(e)
                if e.downcast_ref::<backfill::BulkRefused>()
                    .is_some_and(|r| r.in_progress) =>
            {
                tracing::warn!(orders = count, "another bulk operation runs on the shop; reading the window page by page instead");
                pages = page_window(client, &search, &mut sender).await?;
            }
            Err(e) => return Err(e),
        }
    } else {
        pages = page_window(client, &search, &mut sender).await?;
    }
    let mut orders = sender.finish().await?;
    if args.execute {
        save(&args.state_dir, &args.shop, to)?;
    }
    orders.operation_id = format!("reconcile {} .. {}", fmt(from), fmt(to));
    let missing_subscriptions = if args.check_subscriptions {
        missing_subscriptions(client, &settings.ingest.topics).await?
    } else {
        Vec::new()
    };
    Ok(Sweep {
        from: fmt(from),
        to: fmt(to),
        pages,
        bulk_operation,
        orders,
        missing_subscriptions,
    })
}

/// Read the window page by page into `sender`; the number of pages.
async fn page_window(
    client: &AdminClient,
    search: &str,
    sender: &mut Sender<'_>,
) -> anyhow::Result<u64> {
    let query = admin_api::orders_page_query();
    let mut after: Option<String> = None;
    let mut pages = 0;
    let mut line = 0u64;
    loop {
        let data = client
            .graphql(&query, json!({"query": search, "after": after}))
            .await?;
        pages += 1;
        let connection = &data["orders"];
        let edges = connection["edges"]
            .as_array()
            .context("orders.edges missing from Shopify's answer")?;
        for e in edges {
            line += 1;
            let node = serde_json::to_vec(&e["node"]).expect("a JSON value serialises");
            sender.line(line, &node).await?;
        }
        match (
            connection["pageInfo"]["hasNextPage"].as_bool(),
            connection["pageInfo"]["endCursor"].as_str(),
        ) {
            // A cursor that does not move would page forever: an odd answer, not progress.
            (Some(true), Some(cursor)) if after.as_deref() == Some(cursor) => {
                return Err(admin_api::AdminError::Unexpected(format!(
                    "orders.pageInfo.endCursor {cursor:?} repeated with hasNextPage"
                ))
                .into())
            }
            (Some(true), Some(cursor)) => after = Some(cursor.to_owned()),
            (Some(false), _) => return Ok(pages),
            _ => {
                return Err(admin_api::AdminError::Unexpected(
                    "orders.pageInfo without hasNextPage/endCursor".into(),
                )
                .into())
            }
        }
    }
}

/// Read the window with one bulk operation into `sender`; the operation's id. Not resumable
/// (the watermark moves only after a complete sweep, so a failed one is read again whole);
/// an operation that fails, is canceled or expires fails the sweep.
async fn bulk_window(
    client: &AdminClient,
    search: &str,
    sender: &mut Sender<'_>,
    args: &ReconcileArgs,
) -> anyhow::Result<String> {
    let id = backfill::start_operation(client, &admin_api::bulk_orders_query(Some(search))).await?;
    let why = match backfill::finish_operation(client, &id, args.poll_interval, false).await? {
        backfill::Finished::Completed(None) => return Ok(id),
        backfill::Finished::Completed(Some(url)) => {
            if backfill::stream_lines(client, &url, 0, sender, false).await? {
                return Ok(id);
            }
            format!("the result URL of bulk operation {id} expired")
        }
        backfill::Finished::Gone(why) | backfill::Finished::Ended(why) => why,
    };
    anyhow::bail!("{why}; the watermark stays and the next sweep reads the window again")
}

/// The accepted topics the shop has no webhook subscription for. Shopify deletes an Admin-API
/// subscription after 8 consecutive failed deliveries, silently: from then on only reconcile
/// sees that topic's changes. Compliance topics are declared in the app's configuration, not
/// subscribed, and are not checked.
pub async fn missing_subscriptions(
    client: &AdminClient,
    topics: &[schemas::ShopifyTopic],
) -> anyhow::Result<Vec<String>> {
    let data = client
        .graphql(admin_api::SUBSCRIPTIONS_QUERY, json!({}))
        .await?;
    let subscribed: std::collections::BTreeSet<&str> = data["webhookSubscriptions"]["nodes"]
        .as_array()
        .context("webhookSubscriptions.nodes missing from Shopify's answer")?
        .iter()
        .filter_map(|n| n["topic"].as_str())
        .collect();
    Ok(topics
        .iter()
        .filter(|t| {
            !matches!(
                t.scope(),
                schemas::TopicScope::CustomerCompliance | schemas::TopicScope::Shop
            )
        })
        .filter(|t| !subscribed.contains(subscription_topic(**t).as_str()))
        .map(|t| t.as_str().to_owned())
        .collect())
}

/// `orders/updated` → `ORDERS_UPDATED` (`WebhookSubscriptionTopic`).
pub fn subscription_topic(t: schemas::ShopifyTopic) -> String {
    t.as_str().to_ascii_uppercase().replace('/', "_")
}

/// `tierflow_ingest_reconcile_*`, served in periodic mode.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub runs: prometheus::IntCounterVec,
    pub orders: prometheus::IntCounter,
    pub last_success: prometheus::Gauge,
    pub missing_subscriptions: prometheus::IntGaugeVec,
}

impl Metrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            runs: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tierflow_ingest_reconcile_runs_total",
                    "Reconcile sweeps by outcome (ok, failed).",
                ),
                &["outcome"],
            )?,
            orders: prometheus::IntCounter::new(
                "tierflow_ingest_reconcile_orders_total",
                "Orders read by reconcile sweeps (published with --execute). Which of them webhooks missed: tierflow_segmenter_missed_webhooks_total.",
            )?,
            last_success: prometheus::Gauge::new(
                "tierflow_ingest_reconcile_last_success_timestamp_seconds",
                "When the last sweep completed (its window's upper bound).",
            )?,
            missing_subscriptions: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "tierflow_ingest_reconcile_subscription_missing",
                    "1 for an accepted Shopify topic the shop has no webhook subscription for (--check-subscriptions), else 0.",
                ),
                &["shopify_topic"],
            )?,
        };
        registry.register(Box::new(m.runs.clone()))?;
        registry.register(Box::new(m.orders.clone()))?;
        registry.register(Box::new(m.last_success.clone()))?;
        registry.register(Box::new(m.missing_subscriptions.clone()))?;
        Ok(m)
    }

    pub fn record(&self, result: &anyhow::Result<Sweep>, checked: &[schemas::ShopifyTopic]) {
        match result {
            Ok(s) => {
                for t in checked {
                    let missing = s.missing_subscriptions.iter().any(|m| m == t.as_str());
                    self.missing_subscriptions
                        .with_label_values(&[t.as_str()])
                        .set(i64::from(missing));
                }
                self.runs.with_label_values(&["ok"]).inc();
                self.orders.inc_by(s.orders.orders);
                if let Ok(t) = DateTime::parse_from_rfc3339(&s.to) {
                    self.last_success.set(t.timestamp() as f64);
                }
            }
            Err(_) => self.runs.with_label_values(&["failed"]).inc(),
        }
    }
}

/// The summary an operator reads after a sweep.
pub fn report(s: &Sweep, executed: bool) -> String {
    let subscriptions = if s.missing_subscriptions.is_empty() {
        String::new()
    } else {
        format!(
            "; NO WEBHOOK SUBSCRIPTION for {} (Shopify deletes one after 8 failed deliveries): register it again (webhookSubscriptionCreate, or the app's configuration); until then only reconcile sees those changes",
            s.missing_subscriptions.join(", ")
        )
    };
    format!(
        "{} orders updated {} .. {} ({}); {}{subscriptions}",
        s.orders.orders,
        s.from,
        s.to,
        match &s.bulk_operation {
            Some(id) => format!("bulk operation {id}"),
            None => format!("{} pages", s.pages),
        },
        if executed {
            format!(
                "{} published (the segmenter counts those webhooks missed: tierflow_segmenter_missed_webhooks_total); watermark moved to {}",
                s.orders.published, s.to
            )
        } else {
            "nothing published, watermark unchanged (dry run; --execute to publish)".to_owned()
        }
    )
}
