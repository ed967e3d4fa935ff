//! Shopify webhook signature verification.
//!
//! Shopify signs the raw body bytes with HMAC-SHA256 and sends the base64 of the 32-byte tag in
//! `X-Shopify-Hmac-Sha256`. The MAC must be computed over the exact bytes received: Shopify
//! escapes `/` as `\/`, so re-serialised JSON would not match. The header is not covered by the
//! MAC and there is no timestamp in it, so replay protection is the downstream dedup on
//! `X-Shopify-Webhook-Id`, not this module's job.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::config::ResolvedSecrets;

type HmacSha256 = Hmac<Sha256>;

const TAG_LEN: usize = 32;

/// Why a request's signature was refused. All map to 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Shopify-Hmac-Sha256 header is missing")]
    Missing,
    #[error("X-Shopify-Hmac-Sha256 is not the base64 of a 32-byte HMAC-SHA256")]
    Malformed,
    #[error("signature does not match any configured secret for this shop")]
    Mismatch,
}

/// Verifies bodies against the secret set of their shop: its own secrets, then the global ones.
///
/// Keys are scheduled once at startup (a keyed HMAC state per secret) and cloned per request, so
/// a request costs one pass over the body per secret tried. Several secrets exist for rotation
/// (Shopify takes up to an hour to switch an app to a new client secret).
pub struct Verifier {
    global: Vec<HmacSha256>,
    shops: HashMap<String, Vec<HmacSha256>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("global_secrets", &self.global.len())
            .field("shops", &self.shops.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    pub fn new(secrets: &ResolvedSecrets) -> Self {
        let keyed = |list: &[secrecy::SecretString]| -> Vec<HmacSha256> {
            list.iter()
                .map(|s| {
                    HmacSha256::new_from_slice(s.expose_secret().as_bytes())
                        .expect("HMAC accepts keys of any length")
                })
                .collect()
        };
        Verifier {
            global: keyed(&secrets.global),
            shops: secrets
                .shops
                .iter()
                .map(|(shop, list)| (shop.clone(), keyed(list)))
                .collect(),
        }
    }

    /// Is `shop` one with its own secret set (and so a bounded metric label)?
    pub fn knows_shop(&self, shop: &str) -> bool {
        self.shops.contains_key(shop)
    }

    /// Check `header` (the raw `X-Shopify-Hmac-Sha256` value) against `body` for `shop`.
    pub fn verify(
        &self,
        shop: &str,
        header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let tag = decode_tag(header).ok_or(SignatureError::Malformed)?;
        let candidates = self
            .shops
            .get(shop)
            .into_iter()
            .flatten()
            .chain(self.global.iter());
        for keyed in candidates {
            let mut mac = keyed.clone();
            mac.update(body);
            // `verify_slice` compares in constant time (subtle::ConstantTimeEq).
            if mac.verify_slice(&tag).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }
}

fn decode_tag(header: &[u8]) -> Option<[u8; TAG_LEN]> {
    // base64 of 32 bytes is exactly 44 characters with one `=` of padding.
    if header.len() != 44 {
        return None;
    }
    let mut tag = [0u8; TAG_LEN];
    let mut buf = [0u8; 33];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(header, &mut buf)
        .ok()?;
    if n != TAG_LEN {
        return None;
    }
    tag.copy_from_slice(&buf[..TAG_LEN]);
    Some(tag)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::SecretString;

    use super::*;

    fn verifier(global: &[&str], shops: &[(&str, &[&str])]) -> Verifier {
        let set = |l: &[&str]| {
            l.iter()
                .map(|s| SecretString::from(s.to_string()))
                .collect()
        };
        Verifier::new(&ResolvedSecrets {
            global: set(global),
            shops: shops
                .iter()
                .map(|(k, v)| (k.to_string(), set(v)))
                .collect::<BTreeMap<_, _>>(),
        })
    }

    // Vectors computed independently with Python's hmac/hashlib/base64.
    const VECTORS: &[(&[u8], &str)] = &[
        (
            br#"{"id":820982911946154508,"note":"a\/b"}"#,
            "YAdS9sUURCgKEuYsQB7P6HPHMWcEFNfqOjRDBX2zkVM=",
        ),
        (
            "{\"name\":\"Zoë – 日本\"}".as_bytes(),
            "a69Z0/206+RmZVxxq+f1Io8n284Z8zUtF3iAuTyOlDg=",
        ),
        (b"", "bOHHmggNhNbGAXcwgacAqyU7cLlHjJnbrphSoqid3wA="),
    ];

    #[test]
    fn known_vectors_verify_over_exact_bytes() {
        let v = verifier(&["shpss_secret"], &[]);
        for (body, sig) in VECTORS {
            assert_eq!(
                v.verify("s.myshopify.com", Some(sig.as_bytes()), body),
                Ok(())
            );
        }
        // The same JSON with `/` unescaped is different bytes and must fail.
        let unescaped = br#"{"id":820982911946154508,"note":"a/b"}"#;
        assert_eq!(
            v.verify("s.myshopify.com", Some(VECTORS[0].1.as_bytes()), unescaped),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_mac() {
        let v = verifier(&["shpss_secret"], &[]);
        let body = VECTORS[0].0;
        let good = VECTORS[0].1;
        assert_eq!(v.verify("s", None, body), Err(SignatureError::Missing));
        for bad in [
            "",
            "not base64 at all!!",
            &good[..43],                                        // wrong length
            &format!("{good}="),                                // wrong length
            "YAdS9sUURCgKEuYsQB7P6HPHMWcEFNfqOjRDBX2zkV*=",     // non-base64 char
            "YWJj",                                             // valid base64, 3 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 36 bytes
        ] {
            assert_eq!(
                v.verify("s", Some(bad.as_bytes()), body),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        let mut flipped = good.as_bytes().to_vec();
        flipped[0] = b'Z';
        assert_eq!(
            v.verify("s", Some(&flipped), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_old_and_new_and_shop_sets_are_scoped() {
        let body = br#"{"id":1}"#;
        let old = "qXaXF9OTa4KVT4q1mXmUiw6VbACWU+C0YHPPj4R7xN4=".as_bytes();
        let new = "+IQCwsBmpBptlAMPjeH8vNHQdQwdK6ob17WrmGcC9fA=".as_bytes();
        let v = verifier(&[], &[("a.myshopify.com", &["new-secret", "old-secret"])]);
        assert_eq!(v.verify("a.myshopify.com", Some(old), body), Ok(()));
        assert_eq!(v.verify("a.myshopify.com", Some(new), body), Ok(()));
        // Another shop cannot use a.myshopify.com's secrets.
        assert_eq!(
            v.verify("b.myshopify.com", Some(new), body),
            Err(SignatureError::Mismatch)
        );
        // Global secrets are accepted for every shop, including ones with their own set.
        let v = verifier(&["old-secret"], &[("a.myshopify.com", &["new-secret"])]);
        assert_eq!(v.verify("a.myshopify.com", Some(old), body), Ok(()));
        assert_eq!(v.verify("b.myshopify.com", Some(old), body), Ok(()));
        assert!(v.knows_shop("a.myshopify.com") && !v.knows_shop("b.myshopify.com"));
        assert!(!format!("{v:?}").contains("secret\""));
    }
}
