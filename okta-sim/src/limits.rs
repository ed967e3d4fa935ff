//! Okta's rate limits as the simulator enforces them.
//!
//! Each endpoint belongs to a bucket with a request limit per fixed window (Okta's windows are
//! one minute; the simulator's length is configurable but whole seconds, because
//! `X-Rate-Limit-Reset` is an epoch second). Windows are aligned to multiples of their length
//! since the epoch, so the reset a client reads is exact. Every bucketed response carries
//! `X-Rate-Limit-Limit`, `-Remaining` and `-Reset`; a request over the limit gets 429
//! `E0000047`. Separately, the org allows a bounded number of concurrent requests: one more gets
//! 429 with `X-Rate-Limit-Limit: 0` (how Okta marks a concurrency violation).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The rate-limit buckets (Okta's names for them differ per endpoint family; these are the ones
/// the writer's calls fall in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// `GET /api/v1/users/{idOrLogin}` and `GET /api/v1/users/{id}/groups`: 2,000/min.
    UsersGet,
    /// `GET /api/v1/users?search=`: 600/min.
    UsersSearch,
    /// `POST /api/v1/users/{id}` and `POST /api/v1/users`: 600/min.
    UsersUpdate,
    /// `/api/v1/groups…`: 500/min.
    Groups,
    /// `POST /oauth2/v1/token`.
    Token,
}

impl Bucket {
    pub const ALL: [Bucket; 5] = [
        Bucket::UsersGet,
        Bucket::UsersSearch,
        Bucket::UsersUpdate,
        Bucket::Groups,
        Bucket::Token,
    ];

    /// Okta's typical per-minute limit.
    pub fn okta_default(self) -> u32 {
        match self {
            Bucket::UsersGet => 2000,
            Bucket::UsersSearch | Bucket::UsersUpdate | Bucket::Token => 600,
            Bucket::Groups => 500,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bucket::UsersGet => "users_get",
            Bucket::UsersSearch => "users_search",
            Bucket::UsersUpdate => "users_update",
            Bucket::Groups => "groups",
            Bucket::Token => "token",
        }
    }

    pub fn parse(s: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// What a bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Epoch second at which the window resets.
    pub reset: u64,
}

#[derive(Debug)]
struct Window {
    start_ms: u64,
    used: u32,
}

/// Fixed-window counters per bucket.
#[derive(Debug)]
pub struct RateLimits {
    window: Duration,
    limits: BTreeMap<Bucket, u32>,
    windows: Mutex<BTreeMap<Bucket, Window>>,
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RateLimits {
    pub fn new(window: Duration, limits: BTreeMap<Bucket, u32>) -> RateLimits {
        let window = Duration::from_secs(window.as_secs().max(1));
        RateLimits {
            window,
            limits,
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn limit(&self, bucket: Bucket) -> u32 {
        self.limits
            .get(&bucket)
            .copied()
            .unwrap_or_else(|| bucket.okta_default())
    }

    /// Count one request against `bucket` (a refused request counts too, as at Okta).
    pub fn check(&self, bucket: Bucket) -> Verdict {
        let limit = self.limit(bucket);
        let window_ms = self.window.as_millis() as u64;
        let now = epoch_ms();
        let start_ms = now - now % window_ms;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows
            .entry(bucket)
            .or_insert(Window { start_ms, used: 0 });
        if w.start_ms != start_ms {
            *w = Window { start_ms, used: 0 };
        }
        w.used = w.used.saturating_add(1);
        Verdict {
            allowed: w.used <= limit,
            limit,
            remaining: limit.saturating_sub(w.used),
            reset: (start_ms + window_ms) / 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_a_window_and_refuses_past_the_limit() {
        let limits = RateLimits::new(
            Duration::from_secs(3600),
            BTreeMap::from([(Bucket::Groups, 3)]),
        );
        let v: Vec<Verdict> = (0..4).map(|_| limits.check(Bucket::Groups)).collect();
        assert_eq!(
            v.iter()
                .map(|v| (v.allowed, v.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        assert!(v[0].reset * 1000 > epoch_ms());
        assert_eq!(limits.check(Bucket::UsersGet).limit, 2000);
    }
}
