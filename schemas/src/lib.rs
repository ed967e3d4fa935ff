//! Wire contracts shared by tierflow's services.
//!
//! Everything another service, a replay tool or an operator's `kcat` session relies on when it
//! reads tierflow's topics is defined here exactly once: the Shopify topics tierflow accepts
//! ([`ShopifyTopic`]), the Kafka header names the ingest writes ([`headers`]) and the record key
//! rule that keeps one customer's events in one partition ([`key`]).

pub mod headers;
pub mod key;
pub mod topic;

pub use key::{record_key, KeyError, RecordKey};
pub use topic::{ShopifyTopic, TopicScope, UnknownTopic};
