//! Bulk operations: Shopify runs a query over a whole shop in the background and leaves the
//! result as a JSONL file, one line per object, at a URL that expires.
//!
//! The state machine (`BulkOperationStatus`) is derived from the time since creation, so no
//! task runs in the background: `CREATED` for the first half of `bulk_duration`, `RUNNING` for
//! the second, then `COMPLETED` — or `FAILED` (with an `errorCode` and maybe a partial data
//! file) or `CANCELED` when a fault says so or `bulkOperationCancel` was called — and
//! `EXPIRED` once `bulk_expiry` has passed. The result is the shop as it was when the
//! operation was created. The simulator models a bulk query over one top-level connection
//! (`orders`) with no nested connections, which is what tierflow sends; anything else is
//! refused with an `INVALID` user error that says so.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::graphql::{execute_bulk, Ctx};
use crate::SimConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkStatus {
    Created,
    Running,
    Completed,
    Failed,
    Canceled,
    Expired,
}

impl BulkStatus {
    /// `BulkOperationStatus`.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkStatus::Created => "CREATED",
            BulkStatus::Running => "RUNNING",
            BulkStatus::Completed => "COMPLETED",
            BulkStatus::Failed => "FAILED",
            BulkStatus::Canceled => "CANCELED",
            BulkStatus::Expired => "EXPIRED",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, BulkStatus::Created | BulkStatus::Running)
    }
}

#[derive(Debug, Clone)]
pub struct BulkOp {
    pub id: u64,
    pub query: String,
    pub created_at: DateTime<Utc>,
    pub started: Instant,
    /// `errorCode` this operation fails with (a fault).
    pub fail: Option<String>,
    /// Lines a failed operation leaves in its partial data file.
    pub partial_lines: usize,
    pub canceled_at: Option<Instant>,
    /// Canceled by someone else while running (a fault).
    pub canceled_by_other: bool,
    /// The JSONL result, rendered from the shop at creation.
    pub lines: Vec<String>,
}

impl BulkOp {
    pub fn status(&self, config: &SimConfig) -> BulkStatus {
        if self.canceled_at.is_some() {
            return BulkStatus::Canceled;
        }
        let elapsed = self.started.elapsed();
        if elapsed < config.bulk_duration / 2 {
            BulkStatus::Created
        } else if elapsed < config.bulk_duration {
            BulkStatus::Running
        } else if self.canceled_by_other {
            BulkStatus::Canceled
        } else if self.fail.is_some() {
            BulkStatus::Failed
        } else if elapsed > config.bulk_duration + config.bulk_expiry {
            BulkStatus::Expired
        } else {
            BulkStatus::Completed
        }
    }

    /// The lines readable in `status`: all when completed, the partial file's when failed.
    pub fn visible_lines(&self, status: BulkStatus) -> &[String] {
        match status {
            BulkStatus::Completed => &self.lines,
            BulkStatus::Failed => &self.lines[..self.partial_lines.min(self.lines.len())],
            _ => &[],
        }
    }

    /// When the result URL stops working, in Unix milliseconds.
    pub fn url_expiry(&self, config: &SimConfig) -> i64 {
        let ttl = chrono::Duration::from_std(config.bulk_duration + config.bulk_url_ttl)
            .unwrap_or(chrono::Duration::MAX);
        (self.created_at + ttl).timestamp_millis()
    }

    /// The result file's URL; its expiry is fixed at creation, like a signed storage URL's.
    pub fn url(&self, base: &str, partial: bool, config: &SimConfig) -> String {
        let file = if partial { "partial.jsonl" } else { "jsonl" };
        format!(
            "{base}/__sim/bulk/{}.{file}?expires={}",
            self.id,
            self.url_expiry(config)
        )
    }
}

/// Run a bulk `query` over the shop as the caller sees it and return its JSONL lines: each
/// node of the top-level connection, without the connection's `edges`/`node` wrapping.
pub(crate) fn render(ctx: &Ctx, query: &str) -> Result<Vec<String>, String> {
    let data = execute_bulk(ctx, query)?;
    let fields = data.as_object().ok_or("Invalid bulk query: no data")?;
    let [(name, connection)] = fields.iter().collect::<Vec<_>>()[..] else {
        return Err("Bulk queries must contain exactly one top-level connection field".into());
    };
    let nodes: Vec<&Value> = if let Some(edges) = connection.get("edges").and_then(Value::as_array)
    {
        edges.iter().filter_map(|e| e.get("node")).collect()
    } else if let Some(nodes) = connection.get("nodes").and_then(Value::as_array) {
        nodes.iter().collect()
    } else {
        return Err(format!(
            "Bulk query's top-level field `{name}` must select `edges {{ node }}` or `nodes`"
        ));
    };
    nodes
        .into_iter()
        .map(|n| {
            if n.as_object().is_some_and(|o| {
                o.values()
                    .any(|v| v.get("edges").is_some() || v.get("nodes").is_some())
            }) {
                return Err(
                    "nested connections in a bulk query are not modelled by the simulator"
                        .to_owned(),
                );
            }
            Ok(n.to_string())
        })
        .collect()
}
