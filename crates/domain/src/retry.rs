use std::time::Duration;

/// How the durable queue retries a failing job: exponential backoff from
/// `base_delay` doubling per attempt, capped at `max_delay`, until
/// `max_attempts` attempts have been made; then the job is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `attempts_made` failed attempts,
    /// or `None` when the job must be declared dead. `jitter` in [0, 1)
    /// spreads retries of jobs that failed together by up to +25%.
    pub fn next_delay(&self, attempts_made: u32, jitter: f64) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let exponent = attempts_made.saturating_sub(1).min(30);
        let base = self.base_delay.saturating_mul(1u32 << exponent);
        let capped = base.min(self.max_delay);
        let spread = capped.mul_f64(jitter.clamp(0.0, 0.999) * 0.25);
        Some(capped + spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_then_gives_up() {
        let p = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        };
        assert_eq!(p.next_delay(1, 0.0), Some(Duration::from_secs(1)));
        assert_eq!(p.next_delay(2, 0.0), Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(3, 0.0), Some(Duration::from_secs(3)));
        assert_eq!(p.next_delay(4, 0.0), None);
    }

    #[test]
    fn jitter_only_lengthens() {
        let p = RetryPolicy::default();
        let plain = p.next_delay(2, 0.0).expect("retry");
        let jittered = p.next_delay(2, 0.9).expect("retry");
        assert!(jittered >= plain && jittered <= plain.mul_f64(1.25));
    }
}
