//! Vendor times: sent out as RFC 3339 UTC beside the raw value, never guessed.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Earliest plausible call time: 2000-01-01T00:00:00Z.
const EARLIEST: i64 = 946_684_800;
/// Latest plausible call time relative to now: a day ahead (clock skew, time zones).
const AHEAD_S: i64 = 86_400;

/// The time a raw epoch-seconds value stands for, if it is a plausible call time at `now`.
pub fn plausible_epoch(raw: i64, now: SystemTime) -> Option<SystemTime> {
    let now_s = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    if (EARLIEST..=now_s + AHEAD_S).contains(&raw) {
        Some(UNIX_EPOCH + Duration::from_secs(raw as u64))
    } else {
        None
    }
}

/// Formats a time as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(at: SystemTime) -> String {
    let odt = OffsetDateTime::from(at);
    let odt = odt
        .replace_nanosecond(odt.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(odt);
    odt.format(&Rfc3339).unwrap_or_default()
}

/// `{"raw": <as given>, "utc": "<RFC 3339>" | null}` for a vendor time field.
pub fn time_field(raw: &Value, now: SystemTime) -> Value {
    let seconds = match raw {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let utc = seconds
        .and_then(|s| plausible_epoch(s, now))
        .map(|t| Value::String(rfc3339(t)))
        .unwrap_or(Value::Null);
    json!({ "raw": raw, "utc": utc })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    #[test]
    fn keeps_implausible_values_raw() {
        // The seed's CALL_TIME_EPOCH: eleven digits, year 2464.
        assert_eq!(
            time_field(&json!(15616841651_i64), now()),
            json!({"raw": 15616841651_i64, "utc": null})
        );
        assert_eq!(time_field(&json!(123123123), now())["utc"], Value::Null);
    }

    #[test]
    fn converts_plausible_epochs() {
        assert_eq!(
            time_field(&json!(1345373417), now()),
            json!({"raw": 1345373417, "utc": "2012-08-19T10:50:17Z"})
        );
        assert_eq!(
            time_field(&json!("1414320455"), now())["utc"],
            json!("2014-10-26T10:47:35Z")
        );
    }
}
