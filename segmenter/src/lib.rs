//! The segmenter: Shopify order events in, per-customer spend and tier decisions out.
//!
//! - [`normalize`]: raw webhook bodies to order facts (exact ids and decimal amounts).
//! - [`ledger`]: per-customer newest-version-per-order ledgers; the restorable state.
//! - [`tiers`]: the validated half-open tier table.
//! - [`rules`]: the spend rule, the rule version, and the decision for one event.

pub mod ledger;
pub mod normalize;
pub mod rules;
pub mod tiers;
