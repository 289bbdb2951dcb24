use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use mailroom_telemetry::names;
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Client, Script};

use crate::{BucketScope, Decision, Quota, RateLimitError};

/// GCRA in one atomic step, on Redis's clock (so replicas with skewed
/// clocks still share one bucket). Times in microseconds. Returns
/// {allowed, remaining, retry_after_us, reset_us}.
const GCRA_SCRIPT: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tau = emission * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission * cost
local allow_at = new_tat - tau
if allow_at > now then
  local remaining = math.floor((now - (tat - tau)) / emission)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / emission), 0, new_tat - now}
";

/// After a failure, Redis is left alone this long before the next try, so
/// a dead Redis costs one timeout per second, not one per request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Buckets shared through Redis.
pub struct RedisBuckets {
    client: Client,
    connection: RwLock<Option<MultiplexedConnection>>,
    connecting: tokio::sync::Mutex<()>,
    script: Script,
    prefix: String,
    timeout: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not tried.
    resting_until_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl RedisBuckets {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, RateLimitError> {
        let client =
            Client::open(url).map_err(|e| RateLimitError::InvalidRedisUrl(e.to_string()))?;
        Ok(Self {
            client,
            connection: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            script: Script::new(GCRA_SCRIPT),
            prefix: prefix.to_string(),
            timeout,
            epoch: Instant::now(),
            resting_until_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn fail(&self, error: String) {
        let first = self
            .last_error
            .lock()
            .map(|mut last| last.replace(error.clone()).is_none())
            .unwrap_or(false);
        if first {
            tracing::warn!(error = %error, "Redis rate limiter unreachable; following the configured policy");
        }
        metrics::counter!(names::RATE_LIMIT_REDIS_ERRORS_TOTAL).increment(1);
        if let Ok(mut slot) = self.connection.write() {
            *slot = None;
        }
        self.resting_until_ms.store(
            self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    fn recovered(&self) {
        let was_down = self
            .last_error
            .lock()
            .map(|mut last| last.take().is_some())
            .unwrap_or(false);
        if was_down {
            self.resting_until_ms.store(0, Ordering::Relaxed);
            tracing::info!("Redis rate limiter reachable again");
        }
    }

    /// A connection, opening one if needed (one task connects, the others
    /// wait for it); `None` while Redis rests after a failure, unless
    /// `probe` (a health check may try while requests do not).
    async fn connection(&self, probe: bool) -> Option<MultiplexedConnection> {
        if !probe && self.now_ms() < self.resting_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(c) = self.connection.read().ok().and_then(|c| c.clone()) {
            return Some(c);
        }
        let _connecting = tokio::time::timeout(self.timeout * 2, self.connecting.lock())
            .await
            .ok()?;
        if let Some(c) = self.connection.read().ok().and_then(|c| c.clone()) {
            return Some(c);
        }
        if !probe && self.now_ms() < self.resting_until_ms.load(Ordering::Relaxed) {
            // The task ahead of us just failed to connect.
            return None;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match tokio::time::timeout(
            self.timeout * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => {
                if let Ok(mut slot) = self.connection.write() {
                    *slot = Some(c.clone());
                }
                Some(c)
            }
            Ok(Err(e)) => {
                self.fail(e.to_string());
                None
            }
            Err(_) => {
                self.fail("connecting to Redis timed out".into());
                None
            }
        }
    }

    /// The shared decision, or `None` when Redis cannot answer now.
    pub async fn check(
        &self,
        scope: BucketScope,
        id: &str,
        quota: Quota,
        cost: u32,
    ) -> Option<Decision> {
        let mut conn = self.connection(false).await?;
        let emission_us = (1_000_000 / u64::from(quota.per_second.max(1))).max(1);
        let key = format!("{}:{}:{}", self.prefix, scope.as_str(), id);
        let mut invocation = self.script.key(key);
        invocation.arg(emission_us).arg(quota.burst).arg(cost);
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, remaining, retry_us, reset_us))) => {
                self.recovered();
                let us = |v: i64| Duration::from_micros(v.max(0) as u64);
                Some(Decision {
                    allowed: allowed == 1,
                    limit: quota.burst,
                    remaining: remaining.clamp(0, i64::from(quota.burst)) as u32,
                    reset: us(reset_us),
                    retry_after: us(retry_us),
                    limiter_unavailable: false,
                })
            }
            Ok(Err(e)) => {
                self.fail(e.to_string());
                None
            }
            Err(_) => {
                self.fail(format!(
                    "Redis did not answer within {} ms",
                    self.timeout.as_millis()
                ));
                None
            }
        }
    }

    /// One PING: its latency, or the error.
    pub async fn ping(&self) -> (Duration, Option<String>) {
        let started = Instant::now();
        let Some(mut conn) = self.connection(true).await else {
            let error = self
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "Redis is unreachable".into());
            return (started.elapsed(), Some(error));
        };
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => {
                self.recovered();
                (started.elapsed(), None)
            }
            Ok(Err(e)) => {
                self.fail(e.to_string());
                (started.elapsed(), Some(e.to_string()))
            }
            Err(_) => {
                let error = "Redis did not answer PING in time".to_string();
                self.fail(error.clone());
                (started.elapsed(), Some(error))
            }
        }
    }
}
