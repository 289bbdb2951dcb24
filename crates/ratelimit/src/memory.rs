use std::{num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    RateLimiter,
};

use crate::{BucketScope, Decision, Quota};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// This process's buckets (governor's GCRA over a concurrent map).
pub struct MemoryBuckets {
    key: Keyed,
    ip: Keyed,
    key_quota: Quota,
    ip_quota: Quota,
    clock: DefaultClock,
}

fn governor_quota(q: Quota) -> governor::Quota {
    let per_second = NonZeroU32::new(q.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    governor::Quota::per_second(per_second).allow_burst(burst)
}

impl MemoryBuckets {
    pub fn new(key: Quota, ip: Quota) -> Self {
        Self {
            key: RateLimiter::keyed(governor_quota(key)).with_middleware(),
            ip: RateLimiter::keyed(governor_quota(ip)).with_middleware(),
            key_quota: key,
            ip_quota: ip,
            clock: DefaultClock::default(),
        }
    }

    /// `cost` must be within 1..=burst (the caller clamps it).
    pub fn check(&self, scope: BucketScope, id: &str, cost: u32) -> Decision {
        let (limiter, quota) = match scope {
            BucketScope::Key => (&self.key, self.key_quota),
            BucketScope::Ip => (&self.ip, self.ip_quota),
        };
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let emission = quota.emission_interval();
        match limiter.check_key_n(&id.to_string(), n) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: quota.burst,
                    remaining,
                    reset: emission * quota.burst.saturating_sub(remaining),
                    retry_after: Duration::ZERO,
                    limiter_unavailable: false,
                }
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit: quota.burst,
                    remaining: 0,
                    reset: emission * quota.burst,
                    retry_after: wait,
                    limiter_unavailable: false,
                }
            }
            // More than the whole bucket: can never pass (the caller caps
            // costs at the burst, so this is a misconfiguration).
            Err(_) => Decision {
                allowed: false,
                limit: quota.burst,
                remaining: 0,
                reset: emission * quota.burst,
                retry_after: emission * quota.burst,
                limiter_unavailable: false,
            },
        }
    }

    pub fn sweep(&self) {
        for limiter in [&self.key, &self.ip] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
