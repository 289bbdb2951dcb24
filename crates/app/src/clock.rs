use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Midnight UTC of the day containing `ms`.
pub fn start_of_utc_day_ms(ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    ms - ms.rem_euclid(DAY)
}

#[cfg(test)]
mod tests {
    #[test]
    fn midnight() {
        assert_eq!(super::start_of_utc_day_ms(86_400_000 + 5), 86_400_000);
        assert_eq!(super::start_of_utc_day_ms(0), 0);
    }
}
