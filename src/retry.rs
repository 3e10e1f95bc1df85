//! When to try a failed delivery again: the configured schedule with jitter, or the
//! endpoint's own `Retry-After` when it sent one.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The next attempt's delay after `attempts` failed attempts, or `None` when the schedule is
/// exhausted and the event goes to the dead letters.
pub fn next_delay(schedule_s: &[u64], jitter_percent: u8, attempts: u32) -> Option<Duration> {
    let base = *schedule_s.get(attempts.saturating_sub(1) as usize)?;
    let base_ms = base.saturating_mul(1000) as f64;
    let spread = f64::from(jitter_percent.min(100)) / 100.0;
    let factor = if spread > 0.0 {
        rand::rng().random_range((1.0 - spread)..=(1.0 + spread))
    } else {
        1.0
    };
    Some(Duration::from_millis((base_ms * factor).max(0.0) as u64))
}

/// Reads a `Retry-After` header: delta seconds or an HTTP date, capped at `max`.
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(value, &format)
            .ok()?
            .assume_utc();
        SystemTime::from(at).duration_since(now).unwrap_or_default()
    };
    Some(delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_schedule_within_jitter_and_ends() {
        let schedule = [5, 300, 1800];
        for _ in 0..100 {
            let d = next_delay(&schedule, 20, 2).expect("second retry");
            assert!(
                (240_000..=360_000).contains(&(d.as_millis() as u64)),
                "{d:?}"
            );
        }
        assert_eq!(next_delay(&schedule, 0, 1), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&schedule, 0, 4), None);
    }

    #[test]
    fn reads_retry_after_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let max = Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after("120", now, max),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now, max),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("99999", now, max), Some(max));
        assert_eq!(parse_retry_after("soon", now, max), None);
    }
}
