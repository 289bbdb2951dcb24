use std::time::Duration;

use crate::SecurityError;

/// Parses the durations operators type: a whole number and a unit, `s`,
/// `m`, `h`, `d` or `w` (`90d`, `24h`, `30m`). Zero is refused: a key that
/// expires at once or an overlap of nothing is a typo, not an intent.
pub fn parse_duration(raw: &str) -> Result<Duration, SecurityError> {
    let invalid = || SecurityError::InvalidDuration(raw.to_string());
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let seconds_per_unit = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(invalid()),
    };
    // Ten years is the longest anyone means; beyond it is a mistake.
    const MAX_SECONDS: u64 = 10 * 366 * 86_400;
    match n.checked_mul(seconds_per_unit) {
        Some(s) if s > 0 && s <= MAX_SECONDS => Ok(Duration::from_secs(s)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 30m "), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "d",
            "90",
            "0d",
            "-1d",
            "1y",
            "1.5h",
            "99999999999999w",
            "h24",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
