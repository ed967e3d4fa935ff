//! The Okta Management API client: authentication (SSWS API token or an OAuth 2.0 service app
//! with `private_key_jwt`), Okta's error body, pacing through the [`Limiter`], retries with the
//! `backoff` crate, and paging. The operations themselves (paths, methods, what an answer must
//! carry) are typed in [`api`].
//!
//! Protocol facts this relies on (Okta's docs and the official OpenAPI spec):
//! - Errors carry `errorCode`, `errorSummary`, `errorId`, `errorCauses`; branch on code and
//!   status, never on the summary. Every response has `X-Okta-Request-Id`.
//! - Retry: 429 (`E0000047`), 5xx, 409 `E0000112`, timeouts, connection errors. 401 means the
//!   credentials are bad for every call (pause, do not dead-letter); other 4xx are permanent.
//! - Lists page with `Link: <…>; rel="next"`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backoff::ExponentialBackoff;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

pub mod api;

pub use api::Operation;

use crate::config::{Credentials, OktaConfig};
use crate::limiter::{Limiter, RateHeaders};
use crate::metrics::Metrics;

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff.
    Transient,
    /// The request itself is wrong for Okta: dead-letter the update.
    Permanent,
    /// 401/403: the credentials (or their permissions) are rejected.
    Credentials,
}

/// Okta's JSON error body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_code: Option<String>,
    pub error_summary: Option<String>,
    pub error_id: Option<String>,
    #[serde(default)]
    pub error_causes: Vec<Value>,
}

/// One failed attempt.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {kind}")]
pub struct OktaError {
    pub operation: &'static str,
    /// Okta's `X-Okta-Request-Id` of the answer, when there was one.
    pub request_id: Option<String>,
    pub kind: OktaErrorKind,
}

/// What went wrong in one attempt; each kind knows its [`ErrorClass`].
#[derive(Debug, Clone)]
pub enum OktaErrorKind {
    /// No answer: a timeout, a connection or read failure.
    Transport(String),
    /// An error status with Okta's error body.
    Status { status: u16, body: ErrorBody },
    /// The OAuth token endpoint refused the client (its `error` and `error_description`, put
    /// in the body's code and summary). Any 4xx but 429 there is about the credentials.
    TokenRefused { status: u16, body: ErrorBody },
    /// A 2xx whose body the call cannot use (a proxy's page, a truncated body, a page without
    /// its items): may be a passing fault, so retried.
    InvalidResponse { status: u16, detail: String },
    /// Nothing was sent: the request could not be built (e.g. signing the client assertion).
    Local(String),
}

impl std::fmt::Display for OktaErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OktaErrorKind::Transport(t) => write!(f, "request failed: {t}"),
            OktaErrorKind::InvalidResponse { detail, .. } | OktaErrorKind::Local(detail) => {
                write!(f, "unexpected response: {detail}")
            }
            OktaErrorKind::Status { status, body }
            | OktaErrorKind::TokenRefused { status, body } => {
                let causes: Vec<&str> = body
                    .error_causes
                    .iter()
                    .filter_map(|c| c.get("errorSummary").and_then(Value::as_str))
                    .collect();
                write!(
                    f,
                    "HTTP {status} {} {}",
                    body.error_code.as_deref().unwrap_or("-"),
                    body.error_summary.as_deref().unwrap_or("")
                )?;
                if !causes.is_empty() {
                    write!(f, " ({})", causes.join("; "))?;
                }
                Ok(())
            }
        }
    }
}

impl OktaError {
    pub fn new(operation: &'static str, kind: OktaErrorKind) -> OktaError {
        OktaError {
            operation,
            request_id: None,
            kind,
        }
    }

    /// A failure outside HTTP (e.g. building a client assertion).
    pub fn local(operation: &'static str, message: impl Into<String>) -> OktaError {
        OktaError::new(operation, OktaErrorKind::Local(message.into()))
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            OktaErrorKind::Status { status, .. }
            | OktaErrorKind::TokenRefused { status, .. }
            | OktaErrorKind::InvalidResponse { status, .. } => Some(*status),
            OktaErrorKind::Transport(_) | OktaErrorKind::Local(_) => None,
        }
    }

    /// Okta's error body, if the answer carried one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match &self.kind {
            OktaErrorKind::Status { body, .. } | OktaErrorKind::TokenRefused { body, .. } => {
                Some(body)
            }
            _ => None,
        }
    }

    /// Okta said no to the credentials themselves (a 401, or the token endpoint refusing the
    /// client), as opposed to a 403 that may concern one protected user.
    pub fn rejects_credentials(&self) -> bool {
        match &self.kind {
            OktaErrorKind::Status { status, .. } => *status == 401,
            OktaErrorKind::TokenRefused { status, .. } => {
                (400..500).contains(status) && *status != 429
            }
            _ => false,
        }
    }

    /// Okta answered but not with what the call needs, or nothing could be sent.
    pub fn is_unusable_answer(&self) -> bool {
        matches!(
            self.kind,
            OktaErrorKind::InvalidResponse { .. } | OktaErrorKind::Local(_)
        )
    }

    pub fn class(&self) -> ErrorClass {
        let by_status = |status: u16, body: &ErrorBody| match status {
            429 | 500..=599 => ErrorClass::Transient,
            409 if body.error_code.as_deref() == Some("E0000112") => ErrorClass::Transient,
            401 | 403 => ErrorClass::Credentials,
            _ => ErrorClass::Permanent,
        };
        match &self.kind {
            OktaErrorKind::Transport(_)
            | OktaErrorKind::InvalidResponse { .. }
            | OktaErrorKind::Local(_) => ErrorClass::Transient,
            OktaErrorKind::TokenRefused { .. } if self.rejects_credentials() => {
                ErrorClass::Credentials
            }
            OktaErrorKind::Status { status, body }
            | OktaErrorKind::TokenRefused { status, body } => by_status(*status, body),
        }
    }
}

/// A call that failed for good (permanent, credentials, or retries exhausted), with its history.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{last} (after {attempts} attempt(s))")]
pub struct Failure {
    pub last: OktaError,
    pub attempts: u32,
    pub first_failure: SystemTime,
    pub last_failure: SystemTime,
    /// Retries stopped because `retry_max_elapsed` passed, not because the error is permanent.
    pub exhausted: bool,
}

impl Failure {
    /// A failure decided without retrying (a refused link, a page Okta cannot have meant).
    pub fn immediate(last: OktaError, attempts: u32) -> Failure {
        let now = SystemTime::now();
        Failure {
            last,
            attempts,
            first_failure: now,
            last_failure: now,
            exhausted: false,
        }
    }

    pub fn class(&self) -> ErrorClass {
        self.last.class()
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    pub next: Option<String>,
}

/// Access-token state for an OAuth service app.
#[derive(Debug)]
struct OAuth {
    client_id: String,
    key: jsonwebtoken::EncodingKey,
    algorithm: jsonwebtoken::Algorithm,
    key_id: Option<String>,
    scopes: String,
    token: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Debug)]
enum Auth {
    Ssws(SecretString),
    OAuth(Box<OAuth>),
}

#[derive(Debug)]
pub struct OktaClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    pub limiter: Arc<Limiter>,
    metrics: Metrics,
    retry: RetryPolicy,
    /// Consecutive responses that were 401/403 (any call, any customer).
    auth_failures: AtomicU32,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            initial_interval: self.initial,
            current_interval: self.initial,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: self.max_interval,
            max_elapsed_time: Some(self.max_elapsed),
            ..ExponentialBackoff::default()
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        429 => "429",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Okta object ids: ASCII letters and digits, 20 characters today; bounded generously.
pub fn is_okta_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The most pages one list call follows: far beyond any real list the writer reads (a user's
/// groups, a search by email), small enough that a broken paginator cannot loop for long.
const MAX_PAGES: usize = 1000;

/// The `rel="next"` target of a `Link` header.
fn link_next(headers: &HeaderMap) -> Option<String> {
    headers.get_all("link").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(',').find_map(|part| {
            let (url, params) = part.split_once(';')?;
            params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
                .then(|| {
                    url.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                })
        })
    })
}

impl OktaClient {
    pub fn new(
        base: String,
        credentials: Credentials,
        okta: &OktaConfig,
        metrics: Metrics,
    ) -> anyhow::Result<OktaClient> {
        let auth = match credentials {
            Credentials::ApiToken(t) => Auth::Ssws(t),
            Credentials::OAuth {
                client_id,
                private_key_pem,
                key_id,
                scopes,
            } => {
                let pem = private_key_pem.expose_secret().as_bytes();
                let (key, algorithm) = match jsonwebtoken::EncodingKey::from_rsa_pem(pem) {
                    Ok(k) => (k, jsonwebtoken::Algorithm::RS256),
                    Err(_) => (
                        jsonwebtoken::EncodingKey::from_ec_pem(pem).map_err(|_| {
                            anyhow::anyhow!("okta.oauth_private_key_file: not a PEM RSA or EC (P-256) private key")
                        })?,
                        jsonwebtoken::Algorithm::ES256,
                    ),
                };
                Auth::OAuth(Box::new(OAuth {
                    client_id,
                    key,
                    algorithm,
                    key_id,
                    scopes: scopes.join(" "),
                    token: tokio::sync::Mutex::new(None),
                }))
            }
        };
        // Credentials go to the configured org only: a redirect is followed only within the
        // org's origin (scheme, host, port), a few hops at most; any other is an error.
        let origin = url::Url::parse(&base)
            .map(|u| u.origin())
            .map_err(|e| anyhow::anyhow!("okta.base_url {base:?}: {e}"))?;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 || attempt.url().origin() != origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .redirect(redirects)
            .timeout(okta.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(okta.max_concurrency)
            .user_agent(concat!("tierflow-okta-writer/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OktaClient {
            http,
            base,
            auth,
            limiter: Arc::new(Limiter::new(
                okta.rate_limit_share,
                okta.rate_limit_margin,
                okta.pacing,
                okta.max_concurrency,
                metrics.clone(),
            )),
            metrics,
            retry: RetryPolicy {
                initial: okta.retry_initial_interval,
                max_interval: okta.retry_max_interval,
                max_elapsed: okta.retry_max_elapsed,
            },
            auth_failures: AtomicU32::new(0),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// 401/403 responses in a row, across all calls.
    pub fn consecutive_auth_failures(&self) -> u32 {
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// The `Authorization` header value, fetching or refreshing an OAuth token when needed.
    async fn authorization(&self) -> Result<String, OktaError> {
        match &self.auth {
            Auth::Ssws(t) => Ok(format!("SSWS {}", t.expose_secret())),
            Auth::OAuth(o) => {
                let mut cached = o.token.lock().await;
                if let Some((token, refresh_at)) = cached.as_ref() {
                    if Instant::now() < *refresh_at {
                        return Ok(format!("Bearer {}", token.expose_secret()));
                    }
                }
                let (token, lifetime) = self.fetch_token(o).await?;
                // Refresh at 80% of the lifetime (and at least a minute early), so a token
                // never expires between being read and being used.
                let early = (lifetime / 5)
                    .max(Duration::from_secs(60))
                    .min(lifetime / 2);
                let header = format!("Bearer {}", token.expose_secret());
                *cached = Some((token, Instant::now() + lifetime - early));
                Ok(header)
            }
        }
    }

    async fn forget_token(&self) {
        if let Auth::OAuth(o) = &self.auth {
            *o.token.lock().await = None;
        }
    }

    /// Client credentials with a signed assertion (RFC 7523) at `/oauth2/v1/token`.
    async fn fetch_token(&self, o: &OAuth) -> Result<(SecretString, Duration), OktaError> {
        let op = Operation::Token;
        let url = format!("{}/oauth2/v1/token", self.base);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({
            "iss": o.client_id,
            "sub": o.client_id,
            "aud": url,
            "iat": now,
            "exp": now + 300,
            "jti": format!("{:032x}", rand::random::<u128>()),
        });
        let mut header = jsonwebtoken::Header::new(o.algorithm);
        header.kid = o.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &o.key).map_err(|e| {
            OktaError::local(op.name(), format!("signing the client assertion: {e}"))
        })?;
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", o.scopes.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ];
        let resp = self.paced(op, self.http.post(&url).form(&form)).await?;
        let status = resp.status().as_u16();
        let request_id = request_id(resp.headers());
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            // OAuth errors use `error`/`error_description`; map them onto Okta's error fields.
            let err = OktaError {
                request_id,
                ..OktaError::new(
                    op.name(),
                    OktaErrorKind::TokenRefused {
                        status,
                        body: ErrorBody {
                            error_code: body
                                .get("error")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            error_summary: body
                                .get("error_description")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            ..ErrorBody::default()
                        },
                    },
                )
            };
            return Err(err);
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OktaError::new(
                    op.name(),
                    OktaErrorKind::InvalidResponse {
                        status,
                        detail: "token response without access_token".into(),
                    },
                )
            })?;
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        Ok((
            SecretString::from(token.to_owned()),
            Duration::from_secs(lifetime.max(1)),
        ))
    }

    fn transport_error(&self, op: Operation, e: &reqwest::Error) -> OktaError {
        self.metrics
            .requests
            .with_label_values(&[op.name(), "transport"])
            .inc();
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "failed"
        };
        OktaError::new(op.name(), OktaErrorKind::Transport(format!("{what}: {e}")))
    }

    /// One attempt: wait for budget, send, read, record.
    /// Send one request in `op`'s bucket: wait for the limiter, report the response's
    /// rate-limit headers to it, and count the request and its latency.
    async fn paced(
        &self,
        op: Operation,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OktaError> {
        let permit = self.limiter.acquire(op.bucket()).await;
        let started = Instant::now();
        let result = req.send().await;
        self.metrics
            .request_seconds
            .with_label_values(&[op.name()])
            .observe(started.elapsed().as_secs_f64());
        let resp = result.map_err(|e| self.transport_error(op, &e))?;
        let status = resp.status().as_u16();
        permit.observe(RateHeaders::parse(resp.headers()), status);
        drop(permit);
        self.metrics
            .requests
            .with_label_values(&[op.name(), status_class(status)])
            .inc();
        Ok(resp)
    }

    /// One attempt, as a client span of the current (per-update) span.
    async fn attempt(
        &self,
        op: Operation,
        method: &Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, OktaError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "okta",
            otel.name = %format_args!("{method} {}", op.name()),
            otel.kind = "client",
            http.request.method = %method,
            okta.operation = op.name(),
            http.response.status_code = tracing::field::Empty,
        );
        let result = self
            .attempt_inner(op, method, url, body)
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(r) => Some(r.status),
            Err(e) => e.status(),
        };
        if let Some(s) = status {
            span.record("http.response.status_code", s);
        }
        result
    }

    async fn attempt_inner(
        &self,
        op: Operation,
        method: &Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, OktaError> {
        let authorization = self.authorization().await?;
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, authorization)
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.paced(op, req).await?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            self.auth_failures.fetch_add(1, Ordering::Relaxed);
            if status == 401 {
                self.forget_token().await;
            }
        } else {
            self.auth_failures.store(0, Ordering::Relaxed);
        }
        let request_id = request_id(resp.headers());
        let next = link_next(resp.headers());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(self.transport_error(op, &e)),
        };
        if (200..300).contains(&status) {
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| OktaError {
                    request_id: request_id.clone(),
                    ..OktaError::new(
                        op.name(),
                        OktaErrorKind::InvalidResponse {
                            status,
                            detail: format!("HTTP {status} body is not JSON: {e}"),
                        },
                    )
                })?
            };
            if let Err(why) = op.check_body(&body) {
                self.metrics
                    .invalid_responses
                    .with_label_values(&[op.name()])
                    .inc();
                return Err(OktaError {
                    request_id,
                    ..OktaError::new(
                        op.name(),
                        OktaErrorKind::InvalidResponse {
                            status,
                            detail: format!("HTTP {status}: {why}"),
                        },
                    )
                });
            }
            return Ok(Response { status, body, next });
        }
        Err(OktaError {
            request_id,
            ..OktaError::new(
                op.name(),
                OktaErrorKind::Status {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or_default(),
                },
            )
        })
    }

    /// Send with retries: transient failures back off exponentially with jitter until
    /// `retry_max_elapsed`; anything else returns at once.
    pub async fn send(
        &self,
        op: Operation,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<Response, Failure> {
        let url = if path_and_query.starts_with("http") {
            // A `Link: rel="next"` target. The credentials go only to the configured org.
            if !path_and_query.starts_with(&format!("{}/", self.base)) {
                return Err(Failure::immediate(
                    OktaError::local(
                        op.name(),
                        format!(
                            "refusing to follow a link outside {}: {path_and_query}",
                            self.base
                        ),
                    ),
                    0,
                ));
            }
            path_and_query.to_owned()
        } else {
            format!("{}{path_and_query}", self.base)
        };
        let mut attempts = 0u32;
        let mut first_failure: Option<SystemTime> = None;
        let mut exhausted = true;
        let result = backoff::future::retry_notify(
            self.retry.backoff(),
            || {
                attempts += 1;
                let (method, url, body) = (method.clone(), url.clone(), body.clone());
                async move {
                    self.attempt(op, &method, &url, body.as_ref())
                        .await
                        .map_err(|e| {
                            if e.class() == ErrorClass::Transient {
                                backoff::Error::transient(e)
                            } else {
                                backoff::Error::permanent(e)
                            }
                        })
                }
            },
            |e: OktaError, wait: Duration| {
                first_failure.get_or_insert_with(SystemTime::now);
                self.metrics.retries.with_label_values(&[op.name()]).inc();
                tracing::debug!(operation = op.name(), error = %e, ?wait, "retrying Okta call");
            },
        )
        .await;
        result.map_err(|last| {
            if last.class() != ErrorClass::Transient {
                exhausted = false;
            }
            let now = SystemTime::now();
            Failure {
                last,
                attempts,
                first_failure: first_failure.unwrap_or(now),
                last_failure: now,
                exhausted,
            }
        })
    }

    /// Every page of a list, following `Link: rel="next"`.
    pub async fn list_all(
        &self,
        op: Operation,
        path_and_query: &str,
    ) -> Result<Vec<Value>, Failure> {
        let mut items = Vec::new();
        let mut next = Some(path_and_query.to_owned());
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            let broken = if seen.len() >= MAX_PAGES {
                Some(format!("more than {MAX_PAGES} pages"))
            } else if !seen.insert(url.clone()) {
                Some(format!("the next link repeats a page already read: {url}"))
            } else {
                None
            };
            if let Some(why) = broken {
                self.metrics
                    .invalid_responses
                    .with_label_values(&[op.name()])
                    .inc();
                return Err(Failure::immediate(
                    OktaError::new(
                        op.name(),
                        OktaErrorKind::InvalidResponse {
                            status: 200,
                            detail: format!("paging: {why}"),
                        },
                    ),
                    1,
                ));
            }
            let resp = self.send(op, Method::GET, &url, None).await?;
            match resp.body {
                Value::Array(a) => items.extend(a),
                other => {
                    return Err(Failure::immediate(
                        OktaError::new(
                            op.name(),
                            OktaErrorKind::InvalidResponse {
                                status: resp.status,
                                detail: format!("expected a JSON array, got {other}"),
                            },
                        ),
                        1,
                    ));
                }
            }
            next = resp.next;
        }
        Ok(items)
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-okta-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_okta_guidance() {
        let e = |status: Option<u16>, code: Option<&str>| {
            let kind = match status {
                Some(status) => OktaErrorKind::Status {
                    status,
                    body: ErrorBody {
                        error_code: code.map(str::to_owned),
                        ..ErrorBody::default()
                    },
                },
                None => OktaErrorKind::Transport("timed out".into()),
            };
            OktaError::new("x", kind)
        };
        assert_eq!(
            e(Some(429), Some("E0000047")).class(),
            ErrorClass::Transient
        );
        assert_eq!(e(Some(503), None).class(), ErrorClass::Transient);
        assert_eq!(e(None, None).class(), ErrorClass::Transient);
        assert_eq!(
            e(Some(409), Some("E0000112")).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            e(Some(409), Some("E0000254")).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            e(Some(400), Some("E0000001")).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            e(Some(404), Some("E0000007")).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            e(Some(401), Some("E0000011")).class(),
            ErrorClass::Credentials
        );
        let token = |status: u16| {
            OktaError::new(
                "token",
                OktaErrorKind::TokenRefused {
                    status,
                    body: ErrorBody::default(),
                },
            )
        };
        // The token endpoint answers 400 `invalid_client` for bad credentials (RFC 6749 §5.2).
        for status in [400, 401, 403] {
            assert_eq!(token(status).class(), ErrorClass::Credentials, "{status}");
            assert!(token(status).rejects_credentials());
        }
        assert_eq!(token(429).class(), ErrorClass::Transient);
        assert_eq!(token(503).class(), ErrorClass::Transient);
        assert!(!e(Some(403), None).rejects_credentials());
        let unusable = OktaError::new(
            "x",
            OktaErrorKind::InvalidResponse {
                status: 200,
                detail: "no items".into(),
            },
        );
        assert_eq!(unusable.class(), ErrorClass::Transient);
        assert_eq!(unusable.status(), Some(200));
        assert!(unusable.is_unusable_answer());
    }

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            "<https://x.okta.com/api/v1/users?limit=2>; rel=\"self\", <https://x.okta.com/api/v1/users?after=00u2&limit=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://x.okta.com/api/v1/users?after=00u2&limit=2")
        );
        assert_eq!(link_next(&HeaderMap::new()), None);
    }
}
