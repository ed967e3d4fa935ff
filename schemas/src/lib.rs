//! Wire contracts shared by tierflow's services.
//!
//! Everything another service, a replay tool or an operator's `kcat` session relies on when it
//! reads tierflow's topics is defined here exactly once: the Shopify topics tierflow accepts
//! ([`ShopifyTopic`]), the Kafka header names the ingest writes ([`headers`]) and the record key
//! rule that keeps one customer's events in one partition ([`key`], reading the body once with
//! [`body`]), the segment updates the segmenter emits for the Okta writer ([`segment`]), and
//! the tier table both of them read from their config ([`tiers`]).

pub mod body;
pub mod headers;
pub mod key;
pub mod segment;
pub mod tiers;
pub mod topic;

pub use body::BodyFields;
pub use key::{is_shop_domain, record_key, record_key_of, KeyError, RecordKey, ShopifyId};
pub use segment::{
    Cause, CustomerFacts, SegmentUpdate, TierRef, UpdateKind, SEGMENT_SCHEMA_VERSION,
};
pub use tiers::{TierRow, TierTable, TierTableError};
pub use topic::{ShopifyTopic, TopicScope, UnknownTopic};
