//! Pacing against Okta's rate limits, driven by the `X-Rate-Limit-*` headers.
//!
//! Okta counts requests per bucket in fixed windows and reports, on every response, the bucket's
//! `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` (epoch second the window ends). The limiter
//! keeps, per bucket, an estimate of what remains: `limit - max(requests this writer sent in
//! the window, the highest count the server reported)`, i.e. decremented on every send and
//! lowered by any response showing other clients' use. A request goes only while the estimate
//! stays above the part of the bucket reserved for others:
//! `limit - floor(limit * share * (1 - margin))`. Until a bucket's
//! headers are known (first request, or a window that has passed its reset), one request at a
//! time goes out as a probe; once they are known no request is sent into an empty bucket, so
//! 429s after the first response of a window mean another client spent our share.
//!
//! **Pacing** (`[okta] pacing`). `burst` lets a window's share go as fast as requests come, so
//! under a backlog it is spent in the window's first moments and a change arriving later waits
//! for the next window (up to a minute on Okta). `spread` releases the share evenly over the
//! window: the floor a request must stay above falls linearly from
//! `reserve + share × (1 - SPREAD_BURST)` at the window's start to `reserve` at its end, so a
//! tenth of the share can go at once (an idle writer answers a lone change immediately) and the
//! rest one request every `window / share`. Under a backlog, a tier change arriving mid-window
//! (first in the queue, `queue.rs`) takes the next released request instead of waiting for the
//! window to reset; the window's total is the same. The window's length is not in Okta's
//! headers: it is learnt as the longest time-to-reset seen at a window's first response (60 s on
//! Okta); until then a bucket paces as `burst`.
//!
//! Separately, in-flight requests are bounded by an adaptive concurrency limit: a 429 with
//! `X-Rate-Limit-Limit: 0` is Okta's concurrency violation, which halves the limit; it grows
//! back by one per 20 successful responses, up to `max_concurrency`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// What an Okta response said about its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
}

impl RateHeaders {
    pub fn parse(headers: &reqwest::header::HeaderMap) -> Option<RateHeaders> {
        let num =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        Some(RateHeaders {
            limit: num("x-rate-limit-limit")?,
            remaining: num("x-rate-limit-remaining")?,
            reset: num("x-rate-limit-reset")?,
        })
    }
}

/// How a window's share is spent (`[okta] pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// As fast as requests come, until the share is spent.
    Burst,
    /// Evenly over the window (after an initial tenth).
    Spread,
}

/// Share of a window's budget `spread` releases at the window's start.
const SPREAD_BURST: f64 = 0.1;

#[derive(Debug, Default)]
struct BucketState {
    /// `(limit, remaining estimate, reset epoch second)` while the window is known.
    known: Option<(u64, i64, u64)>,
    /// The window's length in seconds, learnt (0 until a window's first response is seen).
    window: f64,
    in_flight: u32,
    /// Requests sent in this bucket so far; a permit carries its sequence number.
    sent: u64,
    /// Sequence numbers of the requests still unanswered.
    unanswered: std::collections::BTreeSet<u64>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<&'static str, BucketState>,
    concurrency: usize,
    in_flight: usize,
    successes: u32,
}

#[derive(Debug)]
pub struct Limiter {
    share: f64,
    margin: f64,
    pacing: Pacing,
    max_concurrency: usize,
    /// Slack after a reset before probing the new window (clock skew, server-side rounding).
    reset_grace: Duration,
    state: Mutex<State>,
    changed: Notify,
    metrics: Metrics,
}

/// Permission to send one request in `bucket`; report the response with [`Permit::observe`].
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    bucket: &'static str,
    seq: u64,
}

/// How far ahead an `X-Rate-Limit-Reset` may be before it is clamped (a minute's window plus
/// clock skew), and what it is clamped to.
const RESET_HORIZON_SECS: f64 = 120.0;
const CLAMPED_WINDOW_SECS: u64 = 60;

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Limiter {
    pub fn new(
        share: f64,
        margin: f64,
        pacing: Pacing,
        max_concurrency: usize,
        metrics: Metrics,
    ) -> Limiter {
        metrics.concurrency_limit.set(max_concurrency as i64);
        Limiter {
            share,
            margin,
            pacing,
            max_concurrency,
            reset_grace: Duration::from_millis(100),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                concurrency: max_concurrency,
                in_flight: 0,
                successes: 0,
            }),
            changed: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The part of a bucket left to other clients.
    fn reserve(&self, limit: u64) -> i64 {
        let ours = (limit as f64 * self.share * (1.0 - self.margin)).floor() as i64;
        limit as i64 - ours.max(1)
    }

    /// The remaining count a request must stay above at `now`, and, when it does not, how long
    /// until the floor next drops by one (spread pacing) or the window resets.
    fn floor(&self, limit: u64, reset: u64, window: f64, now: f64) -> (i64, Option<f64>) {
        let reserve = self.reserve(limit);
        if self.pacing == Pacing::Burst || window <= 0.0 {
            return (reserve, None);
        }
        let ours = (limit as i64 - reserve) as f64;
        let left = (reset as f64 - now).clamp(0.0, window);
        // Not yet released: the share times the part of the window still ahead, less the burst.
        let held = (ours * (1.0 - SPREAD_BURST) * left / window).floor();
        let step = window / (ours * (1.0 - SPREAD_BURST)).max(1.0);
        (reserve + held as i64, Some(step.min(left)))
    }

    /// Requests per second this writer may send in `bucket` (its share of the learnt window),
    /// once the bucket's limit and window are known.
    pub fn granted_per_second(&self, bucket: &str) -> Option<f64> {
        let st = self.lock();
        let b = st.buckets.get(bucket)?;
        let (limit, _, _) = b.known?;
        (b.window > 0.0).then(|| (limit as i64 - self.reserve(limit)) as f64 / b.window)
    }

    /// Wait until a request in `bucket` may go.
    pub async fn acquire(&self, bucket: &'static str) -> Permit<'_> {
        let mut waited = false;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut st = self.lock();
                let now = now_epoch();
                let grace = self.reset_grace.as_secs_f64();
                let concurrency_ok = st.in_flight < st.concurrency;
                let b = st.buckets.entry(bucket).or_default();
                if let Some((_, _, reset)) = b.known {
                    if now >= reset as f64 + grace {
                        b.known = None;
                    }
                }
                let (bucket_ok, until_reset) = match b.known {
                    None => (b.in_flight == 0, None),
                    Some((limit, remaining, reset)) => {
                        let (floor, next_step) = self.floor(limit, reset, b.window, now);
                        let ok = remaining > floor;
                        let until_reset = reset as f64 + grace - now;
                        // Spread pacing: the floor drops again before the reset.
                        let wait = if remaining > self.reserve(limit) {
                            next_step.map_or(until_reset, |s| s.min(until_reset))
                        } else {
                            until_reset
                        };
                        (ok, (!ok).then_some(wait))
                    }
                };
                if concurrency_ok && bucket_ok {
                    b.in_flight += 1;
                    b.sent += 1;
                    let seq = b.sent;
                    b.unanswered.insert(seq);
                    if let Some((_, remaining, _)) = b.known.as_mut() {
                        *remaining -= 1;
                        self.metrics
                            .bucket_remaining
                            .with_label_values(&[bucket])
                            .set(*remaining);
                    }
                    st.in_flight += 1;
                    self.metrics.in_flight.set(st.in_flight as i64);
                    return Permit {
                        limiter: self,
                        bucket,
                        seq,
                    };
                }
                // Waiting for a reset sleeps until it; otherwise a finished request wakes us.
                until_reset.map(|s| Duration::from_secs_f64(s.max(0.0)))
            };
            if !waited {
                waited = true;
                self.metrics
                    .limiter_waits
                    .with_label_values(&[bucket])
                    .inc();
            }
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// The current concurrency bound (for tests and logs).
    pub fn concurrency(&self) -> usize {
        self.lock().concurrency
    }
}

impl Permit<'_> {
    /// Record what the response said: its rate-limit headers, and whether it was a 429.
    pub fn observe(&self, headers: Option<RateHeaders>, status: u16) {
        let l = self.limiter;
        let mut st = l.lock();
        if status == 429 && headers.is_some_and(|h| h.limit == 0) {
            st.concurrency = (st.concurrency / 2).max(1);
            st.successes = 0;
            l.metrics
                .rate_limited
                .with_label_values(&["concurrency"])
                .inc();
            l.metrics.concurrency_limit.set(st.concurrency as i64);
            tracing::warn!(
                concurrency = st.concurrency,
                "Okta concurrency limit hit; lowering in-flight requests"
            );
            return;
        }
        if status < 400 {
            st.successes += 1;
            if st.successes >= 20 && st.concurrency < l.max_concurrency {
                st.successes = 0;
                st.concurrency += 1;
                l.metrics.concurrency_limit.set(st.concurrency as i64);
            }
        }
        let Some(mut h) = headers else { return };
        // Okta's windows are a minute. A reset much further ahead (a proxy's clock, a broken
        // header, a hostile answer) would stop the bucket for as long as it says: believe at
        // most one window from now.
        let now = now_epoch();
        if h.reset as f64 > now + RESET_HORIZON_SECS {
            let clamped = now.ceil() as u64 + CLAMPED_WINDOW_SECS;
            tracing::warn!(
                bucket = self.bucket,
                reset = h.reset,
                clamped,
                "X-Rate-Limit-Reset is implausibly far ahead; clamped to one window"
            );
            l.metrics
                .reset_clamped
                .with_label_values(&[self.bucket])
                .inc();
            h.reset = clamped;
        }
        let b = st.buckets.entry(self.bucket).or_default();
        b.unanswered.remove(&self.seq);
        if status == 429 {
            l.metrics.rate_limited.with_label_values(&["rate"]).inc();
        }
        let reported = if status == 429 { 0 } else { h.remaining as i64 };
        b.known = match b.known {
            // Within a window the estimate already counts every request this writer sent
            // (decremented on send), so it only needs the server's word when the server counts
            // more (other clients): remaining = limit - max(our sends, the server's count). No
            // subtraction of our in-flight requests here: they may or may not be in `reported`
            // (concurrent requests are processed out of order), and subtracting them would
            // count them twice and waste budget.
            Some((_, est, reset)) if reset == h.reset => Some((h.limit, est.min(reported), reset)),
            // A late response from a window that has already passed.
            Some((_, _, reset)) if reset > h.reset => b.known,
            // A new window: the server has counted this request; those sent after it and still
            // unanswered may not be counted yet.
            _ => {
                let uncounted = b.unanswered.range(self.seq + 1..).count() as i64;
                // The window is at least as long as the time to its reset seen now.
                let to_reset = (h.reset as f64 - now).min(CLAMPED_WINDOW_SECS as f64);
                b.window = b.window.max(to_reset);
                Some((h.limit, reported - uncounted, h.reset))
            }
        };
        if let Some((limit, remaining, reset)) = b.known {
            l.metrics
                .bucket_limit
                .with_label_values(&[self.bucket])
                .set(limit as i64);
            l.metrics
                .bucket_remaining
                .with_label_values(&[self.bucket])
                .set(remaining);
            l.metrics
                .bucket_reset
                .with_label_values(&[self.bucket])
                .set(reset as i64);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let l = self.limiter;
        {
            let mut st = l.lock();
            st.in_flight = st.in_flight.saturating_sub(1);
            l.metrics.in_flight.set(st.in_flight as i64);
            if let Some(b) = st.buckets.get_mut(self.bucket) {
                b.in_flight = b.in_flight.saturating_sub(1);
                b.unanswered.remove(&self.seq);
            }
        }
        l.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: usize) -> Limiter {
        Limiter::new(0.5, 0.0, Pacing::Burst, max, Metrics::unregistered())
    }

    fn reset_in(secs: u64) -> u64 {
        now_epoch() as u64 + secs
    }

    #[test]
    fn spread_pacing_releases_a_tenth_then_the_rest_evenly_and_burst_all_at_once() {
        let spread = Limiter::new(0.5, 0.0, Pacing::Spread, 4, Metrics::unregistered());
        let burst = Limiter::new(0.5, 0.0, Pacing::Burst, 4, Metrics::unregistered());
        // limit 100: 50 ours, 50 reserved; a 60 s window resetting at t = 1060.
        let floor = |l: &Limiter, now: f64| l.floor(100, 1060, 60.0, now).0;
        assert_eq!(floor(&spread, 1000.0), 95, "5 (a tenth of 50) at the start");
        assert_eq!(floor(&spread, 1030.0), 72, "half of the rest by mid-window");
        assert_eq!(floor(&spread, 1060.0), 50, "all of it by the end");
        assert_eq!(floor(&burst, 1000.0), 50);
        // Until the window's length is learnt, spread behaves as burst.
        assert_eq!(spread.floor(100, 1060, 0.0, 1000.0).0, 50);
        // The next release is one step away: 60 s / 45.
        let step = spread.floor(100, 1060, 60.0, 1030.0).1.unwrap();
        assert!((step - 60.0 / 45.0).abs() < 1e-9, "{step}");
    }

    #[tokio::test]
    async fn a_reset_a_year_ahead_is_clamped_to_one_window() {
        let l = limiter(10);
        let p = l.acquire("b").await;
        p.observe(
            Some(RateHeaders {
                limit: 10,
                remaining: 0,
                reset: reset_in(365 * 24 * 3600),
            }),
            200,
        );
        drop(p);
        let believed = l.metrics.bucket_reset.with_label_values(&["b"]).get() as u64;
        assert!(
            believed <= reset_in(61),
            "reset believed {believed}, now {}",
            now_epoch()
        );
        assert_eq!(l.metrics.reset_clamped.with_label_values(&["b"]).get(), 1);
    }

    #[tokio::test]
    async fn probes_one_request_until_headers_are_known_then_spends_only_the_share() {
        let l = limiter(10);
        let p = l.acquire("b").await;
        // A second request waits for the probe's answer.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                .await
                .is_err()
        );
        p.observe(
            Some(RateHeaders {
                limit: 10,
                remaining: 9,
                reset: reset_in(60),
            }),
            200,
        );
        drop(p);
        // 10 * 0.5 = 5 ours; 1 spent by the probe → 4 more, then the bucket is closed to us.
        let mut permits = Vec::new();
        for _ in 0..4 {
            permits.push(
                tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                    .await
                    .unwrap(),
            );
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                .await
                .is_err()
        );
        // Other buckets are independent.
        drop(
            tokio::time::timeout(Duration::from_millis(50), l.acquire("other"))
                .await
                .unwrap(),
        );
    }

    #[test]
    fn the_share_of_a_bucket() {
        let l = Limiter::new(0.5, 0.05, Pacing::Burst, 4, Metrics::unregistered());
        assert_eq!(l.reserve(40), 21, "19 of 40 are ours");
        assert_eq!(l.reserve(600), 315, "285 of 600");
        assert_eq!(l.reserve(1), 0, "at least one request per window");
    }

    #[tokio::test]
    async fn other_clients_use_shrinks_what_is_left_for_us() {
        let l = limiter(10);
        let p = l.acquire("b").await;
        p.observe(
            Some(RateHeaders {
                limit: 40,
                remaining: 39,
                reset: reset_in(60),
            }),
            200,
        );
        drop(p);
        // Someone else spent 14: the next response says 25 remain (our two counted), so
        // 25 - 20 (the reserve) = 5 more for us.
        let p = l.acquire("b").await;
        p.observe(
            Some(RateHeaders {
                limit: 40,
                remaining: 25,
                reset: reset_in(60),
            }),
            200,
        );
        drop(p);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(
                tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                    .await
                    .unwrap(),
            );
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn waits_for_the_reset_then_probes_again() {
        let l = limiter(10);
        let p = l.acquire("b").await;
        let reset = now_epoch().ceil() as u64 + 1;
        p.observe(
            Some(RateHeaders {
                limit: 2,
                remaining: 0,
                reset,
            }),
            429,
        );
        drop(p);
        let started = std::time::Instant::now();
        drop(l.acquire("b").await);
        let waited = now_epoch();
        assert!(
            waited >= reset as f64,
            "went at {waited}, before the reset {reset}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn concurrency_429_halves_the_bound_and_successes_grow_it_back() {
        let l = limiter(8);
        let p = l.acquire("b").await;
        p.observe(
            Some(RateHeaders {
                limit: 0,
                remaining: 0,
                reset: reset_in(1),
            }),
            429,
        );
        drop(p);
        assert_eq!(l.concurrency(), 4);
        for _ in 0..40 {
            let p = l.acquire("b").await;
            p.observe(
                Some(RateHeaders {
                    limit: 1000,
                    remaining: 900,
                    reset: reset_in(60),
                }),
                200,
            );
        }
        assert_eq!(l.concurrency(), 6);
        let held: Vec<_> = futures::future::join_all((0..6).map(|_| l.acquire("b"))).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                .await
                .is_err()
        );
        drop(held);
    }
}
