//! Realistic signed Shopify order webhooks.
//!
//! [`payload`] renders order bodies shaped like Shopify's (18-digit ids, decimal-string money in
//! `*_set` bags, line items, `\/`-escaped strings, about 7 KB); [`Webhook`] adds the headers and
//! signature Shopify would send. Tests use these to talk to the ingest over real HTTP; the
//! `loadgen` binary uses them to drive benchmarks and, later, the pipeline's traffic.

// `payload`'s Shopify-sized `json!` literals nest deeper than the default limit.
#![recursion_limit = "512"]

pub mod drive;
pub mod payload;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The Admin API version the generated bodies claim to be rendered in.
pub const API_VERSION: &str = "2025-07";

/// base64(HMAC-SHA256(secret, body)): the `X-Shopify-Hmac-Sha256` value Shopify would send.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// One webhook delivery: the body and every header Shopify sends with it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub topic: String,
    pub shop: String,
    pub webhook_id: String,
    pub event_id: Option<String>,
    pub triggered_at: Option<String>,
    pub api_version: String,
    pub hmac: String,
    pub body: bytes::Bytes,
}

impl Webhook {
    /// A webhook for `body`, signed with `secret`.
    pub fn signed(
        topic: &str,
        shop: &str,
        webhook_id: &str,
        secret: &[u8],
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        let body = body.into();
        Webhook {
            topic: topic.to_owned(),
            shop: shop.to_owned(),
            webhook_id: webhook_id.to_owned(),
            event_id: Some(format!("evt-{webhook_id}")),
            triggered_at: Some("2026-11-22T04:00:00.000Z".to_owned()),
            api_version: API_VERSION.to_owned(),
            hmac: sign(secret, &body),
            body,
        }
    }

    /// The request headers, named as Shopify names them.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-Shopify-Topic", self.topic.clone()),
            ("X-Shopify-Hmac-Sha256", self.hmac.clone()),
            ("X-Shopify-Shop-Domain", self.shop.clone()),
            ("X-Shopify-API-Version", self.api_version.clone()),
            ("X-Shopify-Webhook-Id", self.webhook_id.clone()),
        ];
        if let Some(e) = &self.event_id {
            h.push(("X-Shopify-Event-Id", e.clone()));
        }
        if let Some(t) = &self.triggered_at {
            h.push(("X-Shopify-Triggered-At", t.clone()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_an_independent_vector() {
        // Computed with Python's hmac/hashlib/base64.
        assert_eq!(
            sign(b"old-secret", br#"{"id":1}"#),
            "qXaXF9OTa4KVT4q1mXmUiw6VbACWU+C0YHPPj4R7xN4="
        );
    }
}
