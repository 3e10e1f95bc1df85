//! The tenant's `[tenants.openscape]` section.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::callback::{phone_digits, OpenHours};
use crate::codes::Lang;
use crate::model::transit_key;

/// The longest `call_max_s` (a week).
pub const MAX_CALL_S: u64 = 7 * 24 * 3600;

/// The decision kinds a tenant may route to its webhook instead of pushed figures.
pub const FIGURE_KINDS: [&str; 3] = ["queue_statistics", "agent_status", "system_status"];

/// One tenant's OpenScape settings (every field optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Language of the return-code texts when the request has no `Accept-Language`:
    /// `en` (default) or `fr`.
    pub language: String,
    /// The transit-number pool GetTransitNumber allocates from (pilot numbers of the route
    /// control group), in any format (`+1 (555) 555-0180`): numbers are told apart by their
    /// digits, so the command API may name one either way. Empty: GetTransitNumber answers
    /// -929.
    pub transit_numbers: Vec<String>,
    /// How long a released or expired transit number stays unused before reuse.
    pub transit_quarantine_ms: u64,
    /// The queues Enqueue, EnqueueForAgent and QueryQueueStatistics accept (-905 for
    /// others). Empty: any queue name.
    pub queues: Vec<String>,
    /// Business units: non-empty makes the tenant multitenant (SetBusinessUnit required
    /// before Enqueue, EnqueueForAgent and CreateCallback; -314 for unknown names).
    pub business_units: Vec<String>,
    /// Callback queues by name, with their open hours (-1045 for others).
    pub callback_queues: BTreeMap<String, CallbackQueue>,
    /// Numbers a callback may not call (-1031), in any format CreateCallback accepts.
    pub excluded_numbers: Vec<String>,
    /// Which of QueryQueueStatistics, QueryAgentStatus and QuerySystemStatus ask the
    /// decision webhook (`queue_statistics`, `agent_status`, `system_status`) rather than
    /// answer from the figures pushed through the command API.
    pub figures_from_webhook: Vec<String>,
    /// Longest a call lives without any change before it expires (`call.expired`).
    pub call_max_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            language: "en".into(),
            transit_numbers: Vec::new(),
            transit_quarantine_ms: 5_000,
            queues: Vec::new(),
            business_units: Vec::new(),
            callback_queues: BTreeMap::new(),
            excluded_numbers: Vec::new(),
            figures_from_webhook: Vec::new(),
            call_max_s: 4 * 3600,
        }
    }
}

/// A callback queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackQueue {
    /// IANA time zone of the open hours.
    pub timezone: String,
    /// Weekly open hours, e.g. `["mon-fri 08:00-18:00", "sat 09:00-12:00"]`; empty: always.
    pub open_hours: Vec<String>,
    /// Days the queue is closed, `yyyy-mm-dd` in its time zone.
    pub closed_dates: Vec<String>,
    /// Latest a schedule may reach, in days from now (-1047 beyond).
    pub max_days_ahead: u32,
}

impl Default for CallbackQueue {
    fn default() -> Self {
        CallbackQueue {
            timezone: "UTC".into(),
            open_hours: Vec::new(),
            closed_dates: Vec::new(),
            max_days_ahead: 30,
        }
    }
}

impl CallbackQueue {
    pub fn hours(&self) -> Result<OpenHours, String> {
        OpenHours::parse(&self.timezone, &self.open_hours, &self.closed_dates)
    }
}

impl Settings {
    pub fn from_json(value: &Value) -> Result<Settings, String> {
        if value.is_null() {
            return Ok(Settings::default());
        }
        serde_json::from_value(value.clone()).map_err(|e| e.to_string())
    }

    pub fn lang(&self) -> Lang {
        Lang::from_setting(&self.language).unwrap_or_default()
    }

    pub fn quarantine(&self) -> Duration {
        Duration::from_millis(self.transit_quarantine_ms.min(3_600_000))
    }

    pub fn call_max(&self) -> Duration {
        Duration::from_secs(self.call_max_s.clamp(60, MAX_CALL_S))
    }

    pub fn multitenant(&self) -> bool {
        !self.business_units.is_empty()
    }

    pub fn excluded_digits(&self) -> Vec<String> {
        self.excluded_numbers
            .iter()
            .filter_map(|n| phone_digits(n))
            .collect()
    }

    pub fn figures_from_webhook(&self, kind: &str) -> bool {
        self.figures_from_webhook.iter().any(|k| k == kind)
    }

    /// Every problem, one line each.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if Lang::from_setting(&self.language).is_none() {
            problems.push(format!(
                "language {:?}: expected \"en\" or \"fr\"",
                self.language
            ));
        }
        // Numbers are told apart by their digits: `+1 (555) 555-0180` and `+15555550180`
        // are one number, and a transit arrival may name it either way.
        let mut seen = BTreeMap::new();
        for n in &self.transit_numbers {
            if n.trim().is_empty() || n.chars().count() > 80 || n.chars().any(char::is_control) {
                problems.push(format!("transit_numbers: {n:?} must be 1 to 80 characters"));
            } else if !transit_key(n).chars().any(|c| c.is_ascii_digit()) {
                problems.push(format!("transit_numbers: {n:?} has no digits"));
            }
            if let Some(first) = seen.insert(transit_key(n), n) {
                problems.push(format!(
                    "transit_numbers: {n:?} is the same number as {first:?}"
                ));
            }
        }
        if !(60..=MAX_CALL_S).contains(&self.call_max_s) {
            problems.push(format!("call_max_s: 60 to {MAX_CALL_S}"));
        }
        if self.transit_quarantine_ms > 3_600_000 {
            problems.push("transit_quarantine_ms: at most 3600000 (one hour)".into());
        }
        for q in self.queues.iter().chain(self.business_units.iter()) {
            if q.is_empty() || q.chars().count() > 32 {
                problems.push(format!(
                    "queue or business unit {q:?} must be 1 to 32 characters"
                ));
            }
        }
        for (name, queue) in &self.callback_queues {
            if name.chars().count() > 32 {
                problems.push(format!(
                    "callback_queues.{name}: a name has at most 32 characters"
                ));
            }
            if let Err(e) = queue.hours() {
                problems.push(format!("callback_queues.{name}: {e}"));
            }
            if !(1..=366).contains(&queue.max_days_ahead) {
                problems.push(format!("callback_queues.{name}.max_days_ahead: 1 to 366"));
            }
        }
        for n in &self.excluded_numbers {
            if phone_digits(n).is_none() {
                problems.push(format!("excluded_numbers: {n:?} is not a telephone number"));
            }
        }
        for k in &self.figures_from_webhook {
            if !FIGURE_KINDS.contains(&k.as_str()) {
                problems.push(format!(
                    "figures_from_webhook: {k:?} is not one of {}",
                    FIGURE_KINDS.join(", ")
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_checks() {
        let s = Settings::from_json(&Value::Null).expect("default");
        assert!(s.check().is_empty());
        assert!(!s.multitenant());
        let s = Settings::from_json(&json!({
            "language": "de",
            "transit_numbers": ["100", "100"],
            "callback_queues": {"CBQueue": {"timezone": "Mars/Base", "max_days_ahead": 0}},
            "excluded_numbers": ["abc"],
            "figures_from_webhook": ["nope"],
            "call_max_s": 0,
        }))
        .expect("parse");
        assert_eq!(s.check().len(), 7, "{:?}", s.check());
        let s = Settings::from_json(&json!({
            "transit_numbers": ["+1 (555) 555-0180", "+15555550180", "15555550181", "()"],
        }))
        .expect("parse");
        assert_eq!(
            s.check(),
            [
                r#"transit_numbers: "+15555550180" is the same number as "+1 (555) 555-0180""#,
                r#"transit_numbers: "()" has no digits"#,
            ]
        );
        assert!(Settings::from_json(&json!({"bogus": 1})).is_err());
    }
}
