//! A tenant's `[tenants.ptk]` section and the segment model built from it: operation modes,
//! business hours in an IANA zone, holidays, appointment slots, EWT and offer treatment,
//! queue variables and retry rules.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The target namespace of the WSDL and of every response, unless configured.
pub const DEFAULT_NAMESPACE: &str = "http://ivrgate.dev/ptk/2026/01";

/// The `[tenants.ptk]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Mindful tenant names (`<Tenant>`) this ivrgate tenant answers for; any other gets
    /// 108000 InvalidTenant.
    pub tenants: Vec<String>,
    /// The WSDL's target namespace, used by every response (clients generated from the WSDL
    /// bind elements in it).
    #[serde(default = "default_namespace")]
    pub target_namespace: String,
    /// What GetVersion answers (`major.minor`).
    #[serde(default = "default_version")]
    pub version: String,
    /// The licence quota window for AddInteraction/CreateInteraction (109035), in seconds.
    #[serde(default = "default_window")]
    pub licence_window_s: u64,
    /// How many AddInteraction/CreateInteraction requests one PTK tenant may make per window;
    /// absent: no quota.
    #[serde(default)]
    pub licence_requests_per_window: Option<u64>,
    /// How many licences one PTK tenant may use at once (109005); absent: unlimited.
    /// CreateInteraction reserves one for the inbound treatment (released by the next report,
    /// as the seed says); an AddInteraction callback holds one until it ends.
    #[serde(default)]
    pub licences: Option<u64>,
    /// Callback result codes ModifyInteraction accepts (`Action` Result), each with its type:
    /// CALLINFO_CALLBACK_SUCCESSFUL, CALLINFO_CALLBACK_FAILED or CALLINFO_CALLBACK_CANCELLED.
    #[serde(default = "default_results")]
    pub results: BTreeMap<String, String>,
    /// Data names that are private to the platform (109028 DataNameUnavailable).
    #[serde(default = "default_private")]
    pub private_data_names: Vec<String>,
    /// An interaction without a report for this long (seconds) ends with
    /// `ptk.interaction.expired` and releases its licence; pending callbacks wait for their
    /// time instead.
    #[serde(default = "default_idle")]
    pub idle_expiry_s: u64,
    /// GetSystemVariables' answer.
    #[serde(default)]
    pub system_variables: Map<String, Value>,
    /// The segments (queues) of each PTK tenant.
    #[serde(default)]
    pub segments: Vec<Segment>,
}

/// One segment of one PTK tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// The PTK tenant it belongs to (one of `tenants`).
    pub tenant: String,
    /// The segment name (`<Segment>`).
    pub name: String,
    /// The queue name reported with it; the segment name by default.
    #[serde(default)]
    pub queue: Option<String>,
    /// The operation mode: Normal, Standby, Purge, SmartPurge, QueueSpeak, AfterHours or
    /// Shutdown. Normal turns into AfterHours outside business hours.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// IANA zone of the business hours and holidays.
    #[serde(default = "default_zone")]
    pub timezone: String,
    /// Business hours per weekday (`mon` .. `sun`) as `"HH:MM-HH:MM"`; a day not listed is
    /// closed. Absent: open all the time.
    #[serde(default)]
    pub hours: Option<BTreeMap<String, String>>,
    /// Closed days, `YYYY-MM-DD` in the segment's zone.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// The estimated wait time, seconds.
    #[serde(default = "default_ewt")]
    pub ewt_s: u64,
    /// Callback is offered when the EWT is at least this (TURNONTHRESHOLD), seconds.
    #[serde(default)]
    pub offer_threshold_s: u64,
    /// RecommendedDestination in GetSegmentState.
    #[serde(default)]
    pub recommended_destination: String,
    /// QueueMode in GetSegmentState.
    #[serde(default = "default_queue_mode")]
    pub queue_mode: String,
    /// Whether appointment (scheduled) callbacks are taken (107007 otherwise).
    #[serde(default = "yes")]
    pub appointments: bool,
    /// Appointment slot length, minutes.
    #[serde(default = "default_slot")]
    pub slot_minutes: u32,
    /// Appointments per slot (107014 when full).
    #[serde(default = "default_capacity")]
    pub slot_capacity: u32,
    /// How far ahead appointments may be booked, days (108037 beyond).
    #[serde(default = "default_days")]
    pub appointment_days: u32,
    /// Callback double check: one pending callback per contact in the queue (107009).
    #[serde(default = "yes")]
    pub double_check: bool,
    /// Outbound attempts before a callback is completed as failed (MAXATTEMPTS).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the next attempt after a failed one, seconds.
    #[serde(default = "default_retry")]
    pub retry_interval_s: u64,
    /// Skill ids InteractionQueued accepts for this segment (108045 otherwise); empty: any.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Contact validation: digits (with an optional leading `+`), within these lengths.
    #[serde(default = "default_min_digits")]
    pub contact_min_digits: usize,
    #[serde(default = "default_max_digits")]
    pub contact_max_digits: usize,
    /// Queue variables for GetSegmentVariables, over the ones derived from this section.
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// Ask the `segment_state` decision webhook for the live state (mode, EWT, offer...).
    #[serde(default)]
    pub decision: bool,
    /// The compiled calendar, built on first use (settings are parsed once per
    /// configuration load, so once per segment).
    #[serde(skip)]
    compiled: std::sync::OnceLock<Result<Model, String>>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}
fn default_version() -> String {
    "5.0".into()
}
fn default_window() -> u64 {
    900
}
fn default_idle() -> u64 {
    86_400
}
fn default_results() -> BTreeMap<String, String> {
    [
        ("Successful", "CALLINFO_CALLBACK_SUCCESSFUL"),
        ("Failed", "CALLINFO_CALLBACK_FAILED"),
        ("Cancelled", "CALLINFO_CALLBACK_CANCELLED"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
fn default_private() -> Vec<String> {
    vec!["InteractionId".into(), "Tenant".into(), "Segment".into()]
}
fn default_mode() -> String {
    "Normal".into()
}
fn default_zone() -> String {
    "UTC".into()
}
fn default_ewt() -> u64 {
    30
}
fn default_queue_mode() -> String {
    "AgentPriority".into()
}
fn yes() -> bool {
    true
}
fn default_slot() -> u32 {
    15
}
fn default_capacity() -> u32 {
    10
}
fn default_days() -> u32 {
    14
}
fn default_attempts() -> u32 {
    5
}
fn default_retry() -> u64 {
    300
}
fn default_min_digits() -> usize {
    3
}
fn default_max_digits() -> usize {
    15
}

const DAY: u64 = 86_400;

/// The longest estimated wait time ivrgate takes (configured or from the decision webhook):
/// one day, in seconds.
pub const MAX_EWT_S: u64 = DAY;

/// The operation modes ivrgate knows.
pub const MODES: &[&str] = &[
    "Normal",
    "Standby",
    "Purge",
    "SmartPurge",
    "QueueSpeak",
    "AfterHours",
    "Shutdown",
];

/// Result types ModifyInteraction's results may have.
pub const RESULT_TYPES: &[&str] = &[
    "CALLINFO_CALLBACK_FAILED",
    "CALLINFO_CALLBACK_SUCCESSFUL",
    "CALLINFO_CALLBACK_CANCELLED",
];

impl Settings {
    /// Reads and checks the section; each problem is one line.
    pub fn parse(value: &Value) -> Result<Settings, Vec<String>> {
        if value.is_null() {
            return Err(vec![
                "[tenants.ptk] is missing: no PTK tenants configured".into()
            ]);
        }
        let settings: Settings = serde_json::from_value(value.clone())
            .map_err(|e| vec![format!("[tenants.ptk]: {e}")])?;
        let mut problems = Vec::new();
        if settings.tenants.is_empty() {
            problems.push("[tenants.ptk] tenants: list at least one PTK tenant name".into());
        }
        if settings.target_namespace.trim().is_empty() {
            problems.push("[tenants.ptk] target_namespace: must not be empty".into());
        }
        if !(60..=30 * DAY).contains(&settings.idle_expiry_s) {
            problems.push("[tenants.ptk] idle_expiry_s: must be between 60 and 2592000".into());
        }
        if !(1..=7 * DAY).contains(&settings.licence_window_s) {
            problems.push("[tenants.ptk] licence_window_s: must be between 1 and 604800".into());
        }
        for (name, kind) in &settings.results {
            if !RESULT_TYPES.contains(&kind.as_str()) {
                problems.push(format!(
                    "[tenants.ptk] results.{name}: {kind:?} is not one of {}",
                    RESULT_TYPES.join(", ")
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for segment in &settings.segments {
            let at = format!("[tenants.ptk] segment {}/{}", segment.tenant, segment.name);
            if !seen.insert((segment.tenant.clone(), segment.name.clone())) {
                problems.push(format!("{at}: configured twice"));
            }
            if !settings.tenants.contains(&segment.tenant) {
                problems.push(format!("{at}: tenant is not listed in tenants"));
            }
            if let Err(e) = segment.model() {
                problems.push(format!("{at}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    /// The PTK tenant name as configured, matched case-insensitively.
    pub fn tenant(&self, name: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|t| t.eq_ignore_ascii_case(name.trim()))
            .map(String::as_str)
    }

    pub fn segment(&self, tenant: &str, name: &str) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| s.tenant == tenant && s.name.eq_ignore_ascii_case(name.trim()))
    }

    pub fn segments_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.tenant == tenant)
    }
}

/// A segment's calendar, checked and ready.
#[derive(Debug, Clone)]
pub struct Model {
    pub zone: TimeZone,
    /// Opening hours per weekday (Monday first), `None` closed; all `Some(00:00-24:00)` when
    /// the segment has no hours.
    pub hours: [Option<(Time, Option<Time>)>; 7],
    pub holidays: Vec<Date>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_hm(text: &str) -> Result<Option<Time>, String> {
    let text = text.trim();
    if text == "24:00" {
        return Ok(None);
    }
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not HH:MM"))?;
    let h: i8 = h.parse().map_err(|_| format!("{text:?} is not HH:MM"))?;
    let m: i8 = m.parse().map_err(|_| format!("{text:?} is not HH:MM"))?;
    Time::new(h, m, 0, 0)
        .map(Some)
        .map_err(|_| format!("{text:?} is not a time of day"))
}

impl Segment {
    pub fn queue(&self) -> &str {
        self.queue.as_deref().unwrap_or(&self.name)
    }

    /// The checked, compiled calendar (compiled once).
    pub fn model(&self) -> Result<Model, String> {
        self.compiled.get_or_init(|| self.compile_model()).clone()
    }

    /// Checks and compiles the calendar.
    fn compile_model(&self) -> Result<Model, String> {
        if !MODES.contains(&self.mode.as_str()) {
            return Err(format!(
                "mode {:?} is not one of {}",
                self.mode,
                MODES.join(", ")
            ));
        }
        if self.slot_minutes == 0 || self.slot_minutes > 1440 {
            return Err("slot_minutes must be 1..=1440".into());
        }
        if self.ewt_s > MAX_EWT_S || self.offer_threshold_s > MAX_EWT_S {
            return Err(format!(
                "ewt_s and offer_threshold_s must be at most {MAX_EWT_S}"
            ));
        }
        if self.retry_interval_s == 0 || self.retry_interval_s > 7 * DAY {
            return Err("retry_interval_s must be between 1 and 604800".into());
        }
        if self.appointment_days > 366 {
            return Err("appointment_days must be at most 366".into());
        }
        if self.contact_min_digits > self.contact_max_digits {
            return Err("contact_min_digits is above contact_max_digits".into());
        }
        let zone = TimeZone::get(&self.timezone)
            .map_err(|_| format!("timezone {:?} is not an IANA zone", self.timezone))?;
        let mut hours = [None; 7];
        match &self.hours {
            None => hours = [Some((Time::midnight(), None)); 7],
            Some(map) => {
                for (day, span) in map {
                    let index = DAYS
                        .iter()
                        .position(|d| d.eq_ignore_ascii_case(day))
                        .ok_or_else(|| format!("hours: {day:?} is not one of mon..sun"))?;
                    if span.trim().eq_ignore_ascii_case("closed") {
                        continue;
                    }
                    let (open, close) = span
                        .split_once('-')
                        .ok_or_else(|| format!("hours.{day}: {span:?} is not HH:MM-HH:MM"))?;
                    let open =
                        parse_hm(open)?.ok_or_else(|| format!("hours.{day}: opens at 24:00"))?;
                    let close = parse_hm(close)?;
                    if close.is_some_and(|c| c <= open) {
                        return Err(format!("hours.{day}: closes before it opens"));
                    }
                    hours[index] = Some((open, close));
                }
            }
        }
        let mut holidays = Vec::new();
        for day in &self.holidays {
            holidays.push(
                day.parse::<Date>()
                    .map_err(|_| format!("holiday {day:?} is not YYYY-MM-DD"))?,
            );
        }
        Ok(Model {
            zone,
            hours,
            holidays,
        })
    }
}

impl Model {
    /// Whether the segment is open at `at` (business hours, not a holiday).
    pub fn open_at(&self, at: SystemTime) -> bool {
        let Ok(ts) = Timestamp::try_from(at) else {
            return false;
        };
        let local = ts.to_zoned(self.zone.clone());
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let index = match local.weekday() {
            Weekday::Monday => 0,
            Weekday::Tuesday => 1,
            Weekday::Wednesday => 2,
            Weekday::Thursday => 3,
            Weekday::Friday => 4,
            Weekday::Saturday => 5,
            Weekday::Sunday => 6,
        };
        match self.hours[index] {
            None => false,
            Some((open, close)) => {
                let time = local.time();
                time >= open && close.is_none_or(|c| time < c)
            }
        }
    }
}

/// The live state of a segment (configuration, or the decision webhook's answer).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentState {
    pub operation_mode: String,
    pub ewt_s: u64,
    pub offer_treatment: u8,
    pub mode_status: String,
    pub recommended_destination: String,
    pub queue_mode: String,
}

impl SegmentState {
    /// The configured state at `now`: Normal becomes AfterHours when the segment is closed;
    /// callback is offered in Normal mode when the EWT reaches the threshold.
    pub fn configured(segment: &Segment, model: &Model, now: SystemTime) -> SegmentState {
        let mode = if segment.mode == "Normal" && !model.open_at(now) {
            "AfterHours".to_owned()
        } else {
            segment.mode.clone()
        };
        let offer = u8::from(mode == "Normal" && segment.ewt_s >= segment.offer_threshold_s);
        SegmentState {
            operation_mode: mode,
            ewt_s: segment.ewt_s,
            offer_treatment: offer,
            mode_status: String::new(),
            recommended_destination: segment.recommended_destination.clone(),
            queue_mode: segment.queue_mode.clone(),
        }
    }
}

/// Parses a PTK time: UTC `yyyy-mm-ddTHH:mm:ssZ` exactly (fractions of a second tolerated).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || !text.ends_with('Z')
        || bytes.get(10) != Some(&b'T')
        || bytes.get(4) != Some(&b'-')
        || bytes.get(13) != Some(&b':')
    {
        return None;
    }
    let ts: Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// Formats a time as PTK does: `yyyy-mm-ddTHH:mm:ssZ`.
pub fn format_time(at: SystemTime) -> String {
    match Timestamp::try_from(at) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => String::new(),
    }
}

/// Seconds since the epoch (0 before it).
pub fn epoch_s(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The start of the slot holding `at`.
pub fn slot_start(segment: &Segment, at: SystemTime) -> u64 {
    let len = u64::from(segment.slot_minutes.max(1)) * 60;
    epoch_s(at) / len * len
}

/// Why an appointment time is refused, as a PTK status code.
pub fn check_appointment(
    segment: &Segment,
    model: &Model,
    state: &SegmentState,
    now: SystemTime,
    at: SystemTime,
) -> Result<(), u32> {
    use crate::codes::*;
    if state.operation_mode == "Shutdown" {
        return Err(MODE_REFUSED);
    }
    if !segment.appointments {
        return Err(APPOINTMENTS_DISABLED);
    }
    if at < now {
        return Err(IN_THE_PAST);
    }
    if at < now + Duration::from_secs(state.ewt_s) {
        return Err(BEFORE_EWT);
    }
    if at > now + Duration::from_secs(u64::from(segment.appointment_days) * 86_400) {
        return Err(AFTER_RANGE);
    }
    if !model.open_at(at) {
        return Err(AFTER_HOURS);
    }
    Ok(())
}

/// The queue variables of a segment: those the configuration implies, then `variables`.
pub fn variables(segment: &Segment) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        (
            "SCHEDULEDCALLBACKON".into(),
            if segment.appointments {
                "TRUE"
            } else {
                "FALSE"
            }
            .into(),
        ),
        ("MAXATTEMPTS".into(), segment.max_attempts.to_string()),
        (
            "TURNONTHRESHOLD".into(),
            segment.offer_threshold_s.to_string(),
        ),
        (
            "CDBC_ENABLED".into(),
            if segment.double_check {
                "TRUE"
            } else {
                "FALSE"
            }
            .into(),
        ),
        (
            "RECALLMAXTRYAGAINPERIOD".into(),
            hms(segment.retry_interval_s),
        ),
    ];
    for (k, v) in &segment.variables {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            other => other.to_string(),
        };
        match out.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k.clone(), v)),
        }
    }
    out
}

fn hms(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn segment(extra: Value) -> Segment {
        let mut base = json!({"tenant": "T", "name": "S"});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).expect("segment")
    }

    #[test]
    fn hours_and_holidays_in_the_zone() {
        let s = segment(json!({
            "timezone": "America/New_York",
            "hours": {"mon": "08:00-17:00", "tue": "08:00-17:00"},
            "holidays": ["2026-11-24"]
        }));
        let m = s.model().expect("model");
        // Monday 2026-11-23 13:00 UTC = 08:00 New York: open; 12:59 UTC closed.
        assert!(m.open_at(parse_time("2026-11-23T13:00:00Z").expect("t")));
        assert!(!m.open_at(parse_time("2026-11-23T12:59:59Z").expect("t")));
        assert!(!m.open_at(parse_time("2026-11-23T22:00:00Z").expect("t")));
        // Tuesday is a holiday; Wednesday is not listed.
        assert!(!m.open_at(parse_time("2026-11-24T15:00:00Z").expect("t")));
        assert!(!m.open_at(parse_time("2026-11-25T15:00:00Z").expect("t")));
    }

    #[test]
    fn times_are_strict() {
        assert!(parse_time("2011-10-11T22:00:00Z").is_some());
        assert!(parse_time("2011-10-11 22:00:00Z").is_none());
        assert!(parse_time("2011-10-11T22:00:00+01:00").is_none());
        assert!(parse_time("2011-13-11T22:00:00Z").is_none());
        assert!(parse_time("11/10/2011").is_none());
        assert_eq!(
            format_time(parse_time("2011-10-11T22:00:00Z").expect("t")),
            "2011-10-11T22:00:00Z"
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../../../config/example.toml");
        let block: String = text
            .lines()
            .skip_while(|l| !l.contains("--- ptk example begin"))
            .skip(1)
            .take_while(|l| !l.contains("--- ptk example end"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: toml::Value = toml::from_str(&block).expect("the example is TOML");
        let json = serde_json::to_value(&parsed["tenants"]["ptk"]).expect("json");
        let settings = Settings::parse(&json).expect("the example is valid");
        assert_eq!(settings.segments.len(), 1);
    }

    #[test]
    fn bad_configuration_is_reported_line_by_line() {
        let problems = Settings::parse(&json!({
            "tenants": ["A"],
            "segments": [{"tenant": "B", "name": "S", "mode": "Sleepy", "timezone": "Mars/Olympus"}]
        }))
        .expect_err("bad");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(Settings::parse(&json!({"tenants": ["A"], "bogus": 1})).is_err());
    }
}
