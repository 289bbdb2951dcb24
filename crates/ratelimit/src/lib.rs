//! Rate limits as token buckets (GCRA), one bucket per client: per API key
//! and per client IP. Each request takes `cost` tokens (expensive routes
//! cost more); a bucket holds `burst` tokens and refills at `per_second`.
//!
//! In memory by default (governor). With a Redis URL the buckets live in
//! Redis, updated by one atomic Lua script that reads Redis's own clock, so
//! every replica enforces one shared limit. When Redis cannot be reached
//! the limiter follows its policy: `fail_open` decides with the local
//! buckets, `fail_closed` refuses; it retries Redis about once a second and
//! reports itself degraded meanwhile.
//!
//! Invariant: knows nothing of HTTP; callers map a [`Decision`] to headers.

mod memory;
mod redis_buckets;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use mailroom_telemetry::names;

pub use memory::MemoryBuckets;
pub use redis_buckets::RedisBuckets;

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

impl Quota {
    /// Time to earn one token back.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.per_second.max(1)))
    }
}

/// Whose bucket a request draws from; the label of `rate_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketScope {
    /// One API key (all of its requests, on every route).
    Key,
    /// One client address: unauthenticated requests and failed
    /// authentication attempts.
    Ip,
}

impl BucketScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketScope::Key => "key",
            BucketScope::Ip => "ip",
        }
    }
}

/// What to do when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailurePolicy {
    /// Keep serving, limited by this process's own buckets.
    FailOpen,
    /// Refuse requests until Redis answers again.
    FailClosed,
}

impl std::str::FromStr for RedisFailurePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "fail_open" => Ok(Self::FailOpen),
            "fail_closed" => Ok(Self::FailClosed),
            other => Err(format!("`{other}` is not fail_open or fail_closed")),
        }
    }
}

impl RedisFailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Bucket size (the `RateLimit-Limit` header).
    pub limit: u32,
    /// Tokens left after this request.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: until enough tokens are back.
    pub retry_after: Duration,
    /// Refused because the shared limiter is unreachable (`fail_closed`),
    /// not because the client sent too much.
    pub limiter_unavailable: bool,
}

/// How to build a [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    pub key: Quota,
    pub ip: Quota,
    pub redis_url: Option<String>,
    /// Prefix of the bucket keys in Redis, so several deployments can share
    /// one Redis without sharing limits.
    pub redis_prefix: String,
    pub on_redis_failure: RedisFailurePolicy,
    /// Longest a Redis round trip may take before it counts as a failure.
    pub redis_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("invalid Redis URL: {0}")]
    InvalidRedisUrl(String),
    #[error("invalid quota: {0}")]
    InvalidQuota(&'static str),
}

/// The state of the limiter for `/health/detailed`.
#[derive(Debug, Clone)]
pub struct LimiterHealth {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// `healthy`, or `degraded` when Redis is configured but unreachable.
    pub status: &'static str,
    pub policy: Option<&'static str>,
    pub latency: Duration,
    pub error: Option<String>,
}

/// The rate limiter shared by every request of the process.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    config: LimiterConfig,
    memory: MemoryBuckets,
    redis: Option<RedisBuckets>,
    /// Buckets found empty, until when: lets a caller refuse before doing
    /// the work a request would cost (a key lookup for a guess).
    exhausted: RwLock<HashMap<(BucketScope, String), Instant>>,
}

/// Most buckets remembered as exhausted; beyond it the oldest knowledge is
/// dropped (the buckets themselves still refuse).
const EXHAUSTED_MAX: usize = 100_000;

impl RateLimiter {
    /// Builds the limiter. Redis is connected on first use, so a server
    /// can start while Redis is down (and is then degraded).
    pub fn new(config: LimiterConfig) -> Result<Self, RateLimitError> {
        for quota in [config.key, config.ip] {
            if quota.per_second == 0 || quota.burst == 0 {
                return Err(RateLimitError::InvalidQuota(
                    "per_second and burst must be at least 1",
                ));
            }
        }
        let redis = config
            .redis_url
            .as_deref()
            .map(|url| RedisBuckets::new(url, &config.redis_prefix, config.redis_timeout))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                memory: MemoryBuckets::new(config.key, config.ip),
                redis,
                config,
                exhausted: RwLock::new(HashMap::new()),
            }),
        })
    }

    fn quota(&self, scope: BucketScope) -> Quota {
        match scope {
            BucketScope::Key => self.inner.config.key,
            BucketScope::Ip => self.inner.config.ip,
        }
    }

    /// Takes `cost` tokens from the bucket of (`scope`, `id`). Counts a
    /// refusal in `rate_limit_hits_total{scope}`.
    pub async fn check(&self, scope: BucketScope, id: &str, cost: u32) -> Decision {
        let quota = self.quota(scope);
        let cost = cost.clamp(1, quota.burst);
        let decision = match &self.inner.redis {
            Some(redis) => match redis.check(scope, id, quota, cost).await {
                Some(decision) => decision,
                None => match self.inner.config.on_redis_failure {
                    RedisFailurePolicy::FailOpen => self.inner.memory.check(scope, id, cost),
                    RedisFailurePolicy::FailClosed => Decision {
                        allowed: false,
                        limit: quota.burst,
                        remaining: 0,
                        reset: Duration::from_secs(1),
                        retry_after: Duration::from_secs(1),
                        limiter_unavailable: true,
                    },
                },
            },
            None => self.inner.memory.check(scope, id, cost),
        };
        self.note(scope, id, &decision);
        decision
    }

    /// Like [`RateLimiter::check`], on this process's buckets only: for
    /// probes (`/health`, `/metrics`), which must not depend on Redis.
    pub fn check_local(&self, scope: BucketScope, id: &str, cost: u32) -> Decision {
        let cost = cost.clamp(1, self.quota(scope).burst);
        let decision = self.inner.memory.check(scope, id, cost);
        self.note(scope, id, &decision);
        decision
    }

    fn note(&self, scope: BucketScope, id: &str, decision: &Decision) {
        if decision.allowed {
            return;
        }
        metrics::counter!(names::RATE_LIMIT_HITS_TOTAL, "scope" => scope.as_str()).increment(1);
        if let Ok(mut exhausted) = self.inner.exhausted.write() {
            if exhausted.len() >= EXHAUSTED_MAX {
                exhausted.clear();
            }
            exhausted.insert(
                (scope, id.to_string()),
                Instant::now() + decision.retry_after,
            );
        }
    }

    /// A refusal for a bucket last seen empty and not yet refilled enough,
    /// without touching the bucket (or Redis). Counts the refusal.
    pub fn still_exhausted(&self, scope: BucketScope, id: &str) -> Option<Decision> {
        let until = {
            let exhausted = self.inner.exhausted.read().ok()?;
            if exhausted.is_empty() {
                return None;
            }
            *exhausted.get(&(scope, id.to_string()))?
        };
        let wait = until.checked_duration_since(Instant::now())?;
        metrics::counter!(names::RATE_LIMIT_HITS_TOTAL, "scope" => scope.as_str()).increment(1);
        let quota = self.quota(scope);
        Some(Decision {
            allowed: false,
            limit: quota.burst,
            remaining: 0,
            reset: quota.emission_interval() * quota.burst,
            retry_after: wait,
            limiter_unavailable: false,
        })
    }

    /// Probes Redis (when configured).
    pub async fn health(&self) -> LimiterHealth {
        match &self.inner.redis {
            None => LimiterHealth {
                backend: "memory",
                status: "healthy",
                policy: None,
                latency: Duration::ZERO,
                error: None,
            },
            Some(redis) => {
                let (latency, error) = redis.ping().await;
                LimiterHealth {
                    backend: "redis",
                    status: if error.is_none() {
                        "healthy"
                    } else {
                        "degraded"
                    },
                    policy: Some(self.inner.config.on_redis_failure.as_str()),
                    latency,
                    error,
                }
            }
        }
    }

    /// Forgets in-memory buckets that have refilled completely, so clients
    /// seen once do not hold memory. Call about once a minute.
    pub fn sweep(&self) {
        self.inner.memory.sweep();
        let now = Instant::now();
        if let Ok(mut exhausted) = self.inner.exhausted.write() {
            exhausted.retain(|_, until| *until > now);
        }
    }
}

/// The bucket id of a client address. IPv6 clients are grouped by /64:
/// one subscriber usually holds a whole /64, and per-address buckets
/// would let it rotate through 2^64 of them.
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(LimiterConfig {
            key: Quota { per_second, burst },
            ip: Quota {
                per_second: 1,
                burst: 2,
            },
            redis_url: None,
            redis_prefix: "mailroom:rl".into(),
            on_redis_failure: RedisFailurePolicy::FailOpen,
            redis_timeout: Duration::from_millis(100),
        })
        .expect("limiter")
    }

    #[tokio::test]
    async fn bucket_empties_and_names_the_wait() {
        let l = limiter(1, 3);
        let first = l.check(BucketScope::Key, "k1", 1).await;
        assert!(first.allowed);
        assert_eq!((first.limit, first.remaining), (3, 2));
        assert!(l.check(BucketScope::Key, "k1", 2).await.allowed);
        let refused = l.check(BucketScope::Key, "k1", 1).await;
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after > Duration::from_millis(500));
        assert!(refused.retry_after <= Duration::from_secs(1));
        // Another key and the IP scope have their own buckets.
        assert!(l.check(BucketScope::Key, "k2", 1).await.allowed);
        assert!(l.check(BucketScope::Ip, "k1", 1).await.allowed);
        // Remembered as empty until it refills enough.
        let known = l
            .still_exhausted(BucketScope::Key, "k1")
            .expect("exhausted");
        assert!(!known.allowed && known.retry_after <= refused.retry_after);
        assert!(l.still_exhausted(BucketScope::Key, "k2").is_none());
    }

    #[tokio::test]
    async fn costs_above_the_burst_are_capped() {
        let l = limiter(1, 5);
        let d = l.check(BucketScope::Key, "k", 50).await;
        assert!(d.allowed, "a cost above the burst takes the whole bucket");
        assert_eq!(d.remaining, 0);
    }

    /// The Lua script against the real Redis (`MAILROOM_TEST_REDIS_URL`).
    #[tokio::test]
    async fn redis_buckets_behave_like_memory_buckets() {
        let Ok(url) = std::env::var("MAILROOM_TEST_REDIS_URL") else {
            eprintln!("*** SKIPPED: set MAILROOM_TEST_REDIS_URL=redis://127.0.0.1:6379 ***");
            return;
        };
        let prefix = format!("mailroom-unit:{}", std::process::id());
        let l = RateLimiter::new(LimiterConfig {
            key: Quota {
                per_second: 1,
                burst: 3,
            },
            ip: Quota {
                per_second: 1,
                burst: 3,
            },
            redis_url: Some(url),
            redis_prefix: format!(
                "{prefix}:{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            on_redis_failure: RedisFailurePolicy::FailClosed,
            redis_timeout: Duration::from_millis(500),
        })
        .expect("limiter");
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let d = l.check(BucketScope::Key, "k", 1).await;
            assert!(d.allowed && !d.limiter_unavailable, "{d:?}");
            remaining.push(d.remaining);
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = l.check(BucketScope::Key, "k", 1).await;
        assert!(!refused.allowed && !refused.limiter_unavailable);
        assert!(
            refused.retry_after > Duration::from_millis(500)
                && refused.retry_after <= Duration::from_secs(1)
        );
        assert!(
            l.check(BucketScope::Ip, "k", 1).await.allowed,
            "scopes have their own buckets"
        );
        assert_eq!(l.health().await.status, "healthy");
    }

    #[test]
    fn ipv6_clients_share_a_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(ip_bucket(a), ip_bucket(b));
        assert_eq!(ip_bucket("192.0.2.7".parse().expect("ip")), "192.0.2.7");
        assert_eq!(
            ip_bucket("::ffff:192.0.2.7".parse().expect("ip")),
            "192.0.2.7"
        );
    }

    #[test]
    fn zero_quotas_are_refused() {
        assert!(RateLimiter::new(LimiterConfig {
            key: Quota {
                per_second: 0,
                burst: 1
            },
            ip: Quota {
                per_second: 1,
                burst: 1
            },
            redis_url: None,
            redis_prefix: "mailroom:rl".into(),
            on_redis_failure: RedisFailurePolicy::FailOpen,
            redis_timeout: Duration::from_millis(100),
        })
        .is_err());
    }
}
