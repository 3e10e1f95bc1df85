//! CreateCallback's inputs: the schedule strings (`telephone;mm/dd/yyyy;hh:mm;mm/dd/yyyy;hh:mm`
//! in the caller's local time), the canonical telephone format (seed 000 §4.3) and the
//! weekly open hours of a callback queue in an IANA time zone; and the callback request as
//! it is kept ([`Callback`]).

use ivrgate_adapter::{Entity, EntityKey, Transitioned};
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::model::{self, Effect};
use crate::{codes, fnv, load_channel, precheck_call, store_code, transition_typed, Req};

/// A callback request as stored (an `openscape.callback` entity, id = its CallbackID) and
/// sent as the `data` of its `openscape.callback.*` events, with the keys in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub callback_id: String,
    /// The platform's CallID of the call that asked for it.
    #[serde(rename = "CallID")]
    pub call_id: String,
    pub queue: String,
    pub description: String,
    pub contact_name: String,
    /// The caller's local time minus UTC, as CreateCallback gave it.
    pub time_zone_offset_min: i64,
    pub schedules: Vec<Window>,
    pub contact_data: Map<String, Value>,
    pub business_unit: Option<String>,
    /// The caller's number (the call's ANI).
    pub from: String,
}

/// One schedule of a stored callback: the number as given, and its window in UTC (RFC 3339).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub phone: String,
    pub start: String,
    pub end: String,
}

impl Window {
    pub fn of(schedule: &Schedule) -> Window {
        Window {
            phone: schedule.phone.clone(),
            start: schedule.start.to_string(),
            end: schedule.end.to_string(),
        }
    }
}

impl Callback {
    /// The alias (namespace `openscape.callback.number`) that keeps a second callback to the
    /// same number out of the queue: the queue and the first schedule's digits.
    pub fn number_alias(&self) -> String {
        let digits = self
            .schedules
            .first()
            .and_then(|w| phone_digits(&w.phone))
            .unwrap_or_default();
        format!("{}/{digits}", self.queue)
    }
}

/// One schedule: where and when (UTC) the caller wants to be called back.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The number as given (extension included).
    pub phone: String,
    /// Digits only, without the extension: what duplicates and exclusions compare.
    pub digits: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Reads a telephone number in the seed's canonical format
/// `+[CountryCode] Space [(AreaCode) Space] SubscriberNumber [-- Extension]`, or a dialable
/// address (digits, optionally a leading `+`). Returns the digits without the extension.
pub fn phone_digits(text: &str) -> Option<String> {
    if text.is_empty() || text.chars().count() > 47 {
        return None;
    }
    let (number, extension) = match text.split_once("--") {
        Some((n, e)) => (n, Some(e)),
        None => (text, None),
    };
    if let Some(e) = extension {
        if e.is_empty() || !e.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let mut digits = String::new();
    let mut rest = number;
    if let Some(after_plus) = rest.strip_prefix('+') {
        // +CC, then a space unless the whole number is a dialable +digits string.
        let cc: String = after_plus
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if cc.is_empty() || cc.len() > 3 {
            if after_plus.chars().all(|c| c.is_ascii_digit()) && !after_plus.is_empty() {
                return Some(after_plus.to_owned());
            }
            return None;
        }
        let tail = &after_plus[cc.len()..];
        if tail.is_empty() {
            return Some(cc);
        }
        rest = tail.strip_prefix(' ')?;
        digits.push_str(&cc);
    }
    if let Some(after_paren) = rest.strip_prefix('(') {
        let (area, tail) = after_paren.split_once(')')?;
        if area.is_empty() || !area.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.push_str(area);
        rest = tail.strip_prefix(' ')?;
    }
    // Subscriber number: digits with single '-' or ' ' separators.
    if rest.is_empty()
        || !rest.starts_with(|c: char| c.is_ascii_digit())
        || !rest.ends_with(|c: char| c.is_ascii_digit())
        || rest.contains("--")
        || rest.contains("  ")
        || !rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
    {
        return None;
    }
    digits.extend(rest.chars().filter(char::is_ascii_digit));
    Some(digits)
}

/// Reads one schedule string; `offset_min` is the caller's local time minus UTC. Errors are
/// return codes: `-306` for a string that is not a schedule at all, `-1028` for a date or
/// time that does not exist or an end not after the start.
pub fn parse_schedule(text: &str, offset_min: i64) -> Result<Schedule, i32> {
    let parts: Vec<&str> = text.split(';').map(str::trim).collect();
    let [phone, d1, t1, d2, t2] = parts.as_slice() else {
        return Err(codes::BAD_PARAMETER);
    };
    let digits = phone_digits(phone).ok_or(codes::BAD_PARAMETER)?;
    let offset = i32::try_from(offset_min * 60)
        .ok()
        .and_then(|s| Offset::from_seconds(s).ok())
        .ok_or(codes::BAD_PARAMETER)?;
    let tz = TimeZone::fixed(offset);
    let at = |d: &str, t: &str| -> Result<Timestamp, i32> {
        let dt = local(d, t)?;
        dt.to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|_| codes::CB_INVALID_TIME)
    };
    let start = at(d1, t1)?;
    let end = at(d2, t2)?;
    if end <= start {
        return Err(codes::CB_INVALID_TIME);
    }
    Ok(Schedule {
        phone: (*phone).to_owned(),
        digits,
        start,
        end,
    })
}

/// `mm/dd/yyyy` and `hh:mm` (24-hour clock).
fn local(date: &str, time: &str) -> Result<DateTime, i32> {
    let num = |s: &str, len: usize| -> Result<i64, i32> {
        if s.len() != len || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(codes::CB_INVALID_TIME);
        }
        s.parse().map_err(|_| codes::CB_INVALID_TIME)
    };
    let d: Vec<&str> = date.split('/').collect();
    let t: Vec<&str> = time.split(':').collect();
    let ([m, dd, y], [h, mi]) = (d.as_slice(), t.as_slice()) else {
        return Err(codes::CB_INVALID_TIME);
    };
    let (m, dd, y, h, mi) = (num(m, 2)?, num(dd, 2)?, num(y, 4)?, num(h, 2)?, num(mi, 2)?);
    let date = Date::new(y as i16, m as i8, dd as i8).map_err(|_| codes::CB_INVALID_TIME)?;
    let time = Time::new(h as i8, mi as i8, 0, 0).map_err(|_| codes::CB_INVALID_TIME)?;
    Ok(date.to_datetime(time))
}

/// A callback queue's opening hours: weekly intervals in its own time zone, minus closed
/// dates. No intervals at all means always open.
#[derive(Debug, Clone)]
pub struct OpenHours {
    pub tz: TimeZone,
    /// Per weekday (Monday first), `[start, end)` as minutes after midnight.
    pub week: [Vec<(u16, u16)>; 7],
    pub closed: Vec<Date>,
    pub always: bool,
}

impl OpenHours {
    pub fn always() -> OpenHours {
        OpenHours {
            tz: TimeZone::UTC,
            week: Default::default(),
            closed: Vec::new(),
            always: true,
        }
    }

    /// From settings: an IANA zone, lines like `"mon-fri 08:00-18:00"`, `"sat 09:00-12:30"`
    /// or `"daily 00:00-24:00"` (several ranges comma separated), and `yyyy-mm-dd` closed
    /// dates.
    pub fn parse(timezone: &str, lines: &[String], closed: &[String]) -> Result<OpenHours, String> {
        let tz = TimeZone::get(timezone).map_err(|e| format!("timezone {timezone:?}: {e}"))?;
        let mut week: [Vec<(u16, u16)>; 7] = Default::default();
        for line in lines {
            let (days, ranges) = line
                .trim()
                .split_once(' ')
                .ok_or_else(|| format!("open hours {line:?}: expected \"mon-fri 08:00-18:00\""))?;
            let days = day_set(days).ok_or_else(|| format!("open hours {line:?}: bad days"))?;
            for range in ranges.split(',') {
                let (a, b) = range
                    .trim()
                    .split_once('-')
                    .ok_or_else(|| format!("open hours {line:?}: bad range {range:?}"))?;
                let (a, b) = (minutes(a), minutes(b));
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(format!("open hours {line:?}: bad time in {range:?}"));
                };
                if a >= b {
                    return Err(format!(
                        "open hours {line:?}: {range:?} ends before it starts"
                    ));
                }
                for day in &days {
                    week[*day].push((a, b));
                }
            }
        }
        let closed = closed
            .iter()
            .map(|d| {
                d.parse::<Date>()
                    .map_err(|e| format!("closed date {d:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let always = lines.is_empty();
        Ok(OpenHours {
            tz,
            week,
            closed,
            always,
        })
    }

    /// Whether `[start, end)` meets an open interval.
    pub fn overlaps(&self, start: Timestamp, end: Timestamp) -> bool {
        if self.always {
            return start < end;
        }
        let first = start.to_zoned(self.tz.clone()).date().yesterday().ok();
        let last = end.to_zoned(self.tz.clone()).date().tomorrow().ok();
        let (Some(mut day), Some(last)) = (first, last) else {
            return false;
        };
        // Bounded: schedules are at most `max_days_ahead` long (checked before).
        for _ in 0..800 {
            if day > last {
                break;
            }
            if !self.closed.contains(&day) {
                for (a, b) in &self.week[weekday_index(day.weekday())] {
                    let open = self.at(day, *a);
                    let close = self.at(day, *b);
                    if let (Some(open), Some(close)) = (open, close) {
                        if open < end && start < close {
                            return true;
                        }
                    }
                }
            }
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        false
    }

    fn at(&self, day: Date, minutes: u16) -> Option<Timestamp> {
        let base = day.to_datetime(Time::midnight());
        let dt = base.checked_add(i64::from(minutes).minutes()).ok()?;
        dt.to_zoned(self.tz.clone()).ok().map(|z| z.timestamp())
    }
}

fn weekday_index(day: Weekday) -> usize {
    usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)
}

fn day_index(name: &str) -> Option<usize> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| name.eq_ignore_ascii_case(d))
}

fn day_set(text: &str) -> Option<Vec<usize>> {
    if text.eq_ignore_ascii_case("daily") {
        return Some((0..7).collect());
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out.push(day_index(part)?),
        }
    }
    Some(out)
}

fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// A new CallbackID: the time in milliseconds and four digits of the request's hash.
fn new_callback_id(req: &Req<'_>, attempt: u32) -> String {
    let seed = format!(
        "{}/{}/{:?}/{attempt}",
        req.tenant,
        req.args.text("CallID"),
        req.now
    );
    format!(
        "{:013}{:04}",
        model::ms(req.now).rem_euclid(10_000_000_000_000),
        fnv(seed.as_bytes()) % 10_000
    )
}

/// CreateCallback: the schedules checked against the queue's rules, then a new callback entity
/// with its number claimed in the queue (a second request for it is -1006).
pub(crate) async fn create_callback(req: &Req<'_>) -> Effect {
    let call = match precheck_call(req).await {
        Ok(c) => c,
        Err(eff) => return eff,
    };
    let s = req.settings;
    if s.multitenant() && call.business_unit.is_none() {
        return Effect::code(codes::BAD_BUSINESS_UNIT);
    }
    let queue = req.args.text("QueueName");
    let Some(cbq) = s.callback_queues.get(&queue) else {
        return Effect::code(codes::CB_BAD_QUEUE);
    };
    if call.contact_data_len() > 1000 {
        return Effect::code(codes::CB_DATA_TOO_LONG);
    }
    let offset = req.args.int("TimeZoneOffset").unwrap_or(0);
    let mut schedules = Vec::new();
    for name in ["Schedule1", "Schedule2", "Schedule3"] {
        if let Some(text) = req.args.str(name) {
            match parse_schedule(text, offset) {
                Ok(sch) => schedules.push(sch),
                Err(code) => return Effect::code(code),
            }
        }
    }
    let excluded = s.excluded_digits();
    if schedules.iter().any(|sch| excluded.contains(&sch.digits)) {
        return Effect::code(codes::CB_EXCLUDED);
    }
    let Ok(now) = jiff::Timestamp::from_millisecond(model::ms(req.now)) else {
        return Effect::code(codes::UNKNOWN_ERROR);
    };
    if schedules.iter().all(|sch| sch.end <= now) {
        return Effect::code(codes::CB_ALL_EXPIRED);
    }
    let horizon = now
        .checked_add(jiff::SignedDuration::from_hours(
            24 * i64::from(cbq.max_days_ahead),
        ))
        .unwrap_or(now);
    if schedules
        .iter()
        .any(|sch| sch.start > horizon || sch.end > horizon)
    {
        return Effect::code(codes::CB_TOO_FAR);
    }
    let hours = match cbq.hours() {
        Ok(h) => h,
        Err(_) => OpenHours::always(),
    };
    if !schedules
        .iter()
        .filter(|sch| sch.end > now)
        .any(|sch| hours.overlaps(sch.start.max(now), sch.end))
    {
        return Effect::code(codes::CB_NO_OVERLAP);
    }
    let last_end = schedules.iter().map(|sch| sch.end).max().unwrap_or(now);
    let until = model::at_ms(last_end.as_millisecond());
    let template = Callback {
        callback_id: String::new(),
        call_id: call.call_id.clone(),
        queue,
        description: req.args.text("Description"),
        contact_name: req.args.text("ContactName"),
        time_zone_offset_min: offset,
        schedules: schedules.iter().map(Window::of).collect(),
        contact_data: call.contact_data.clone(),
        business_unit: call.business_unit.clone(),
        from: call.ani.clone(),
    };
    let alias = template.number_alias();
    for attempt in 0..ivrgate_adapter::state::REPLAN_ATTEMPTS {
        let id = new_callback_id(req, attempt);
        let key = EntityKey::new(req.tenant, model::CALLBACK_KIND, &id);
        let state = model::to_value(&Callback {
            callback_id: id.clone(),
            ..template.clone()
        });
        let mut fresh = false;
        let mut f = |read: &[Option<Entity>]| {
            fresh = read.first().is_some_and(Option::is_none);
            if !fresh {
                return Vec::new();
            }
            let mut ev = ivrgate_adapter::EntityEvent::new("openscape.callback.created");
            ev.correlation.insert("CallID".into(), json!(call.call_id));
            ev.correlation.insert("CallbackID".into(), json!(id));
            if let Value::Object(o) = &state {
                ev.data = o.clone();
            }
            ev.vendor_fields = req.args.to_json();
            ev.vendor_fields
                .insert("function".into(), json!("CreateCallback"));
            vec![ivrgate_adapter::Change::Write(
                ivrgate_adapter::Write::state(state.clone())
                    .event(ev)
                    .alias(ivrgate_adapter::AliasChange::Claim {
                        namespace: model::NS_CALLBACK.into(),
                        value: alias.clone(),
                        until: Some(until),
                    }),
            )]
        };
        match req.gw.transition(vec![key], &mut f).await {
            Ok(Transitioned::Done(_)) if fresh => {
                return Effect::code(codes::OK).out("CallbackID", id);
            }
            Ok(Transitioned::Done(_)) => continue,
            Ok(Transitioned::AliasTaken { .. }) => return Effect::code(codes::CB_DUPLICATE),
            Err(e) => return Effect::code(store_code(&e)),
        }
    }
    Effect::code(codes::UNKNOWN_ERROR)
}

/// DeleteCallback: the callback ends and its number is free again.
pub(crate) async fn delete_callback(req: &Req<'_>) -> Effect {
    match load_channel(req).await {
        Ok(Some(ch)) if ch.initialized && ch.queried => {}
        Ok(Some(ch)) if ch.initialized => return Effect::code(codes::NO_CALL_INFO),
        Ok(_) => return Effect::code(codes::NOT_INITIALIZED),
        Err(eff) => return eff,
    }
    let id = req.args.text("CallbackID");
    let key = EntityKey::new(req.tenant, model::CALLBACK_KIND, &id);
    let mut found = false;
    let args = req.args.to_json();
    let result = transition_typed(req.gw, key, |stored: Option<Callback>| {
        found = stored.is_some();
        let Some(stored) = stored else {
            return ivrgate_adapter::Change::Keep;
        };
        let mut ev = ivrgate_adapter::EntityEvent::new("openscape.callback.deleted");
        ev.correlation.insert("CallbackID".into(), json!(id));
        ev.correlation
            .insert("CallID".into(), json!(stored.call_id));
        if let Value::Object(o) = model::to_value(&stored) {
            ev.data = o;
        }
        ev.vendor_fields = args.clone();
        ev.vendor_fields
            .insert("function".into(), json!("DeleteCallback"));
        ivrgate_adapter::Change::Write(ivrgate_adapter::Write {
            state: None,
            events: vec![ev],
            aliases: vec![ivrgate_adapter::AliasChange::Release {
                namespace: model::NS_CALLBACK.into(),
                value: stored.number_alias(),
            }],
            ..ivrgate_adapter::Write::default()
        })
    })
    .await;
    match result {
        Err(why) => Effect::unreadable(why),
        Ok(Ok(_)) if found => Effect::code(codes::OK),
        Ok(Ok(_)) => Effect::code(codes::CB_INVALID_ID),
        Ok(Err(e)) => Effect::code(store_code(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored callback is the document the untyped release wrote, key for key and in
    /// order (it is also the `data` of the callback events).
    #[test]
    fn a_callback_is_stored_in_the_shape_it_always_had() {
        let text = r#"{"callback_id":"17676144000370112","CallID":"7614400032831104","queue":"CBQueue","description":"Callback","contact_name":"Alan Smith","time_zone_offset_min":0,"schedules":[{"phone":"+1 (555) 555-0199--12","start":"2026-01-05T09:00:00Z","end":"2026-01-05T16:00:00Z"}],"contact_data":{"Name":"John"},"business_unit":null,"from":"9055550000"}"#;
        let callback: Callback = serde_json::from_str(text).expect("reads");
        assert_eq!(callback.call_id, "7614400032831104");
        assert_eq!(callback.number_alias(), "CBQueue/15555550199");
        assert_eq!(serde_json::to_string(&callback).expect("writes"), text);
        // A document without its schedules is not a callback.
        assert!(serde_json::from_str::<Callback>(r#"{"callback_id":"1"}"#).is_err());
    }

    #[test]
    fn seed_phone_formats() {
        assert_eq!(
            phone_digits("+1 (555) 555-0199").as_deref(),
            Some("15555550199")
        );
        assert_eq!(
            phone_digits("(555) 555-0199").as_deref(),
            Some("5555550199")
        );
        assert_eq!(phone_digits("+1 555-0199").as_deref(), Some("15550199"));
        assert_eq!(
            phone_digits("+1 (555) 555-0199--1212").as_deref(),
            Some("15555550199")
        );
        assert_eq!(phone_digits("5555550199").as_deref(), Some("5555550199"));
        assert_eq!(phone_digits("+15555550199").as_deref(), Some("15555550199"));
        for bad in [
            "",
            "abc",
            "+1 (555 555",
            "555--",
            "555-",
            "+ 555",
            "(555)555",
            "1".repeat(48).as_str(),
        ] {
            assert_eq!(phone_digits(bad), None, "{bad}");
        }
    }

    #[test]
    fn seed_schedule_in_caller_local_time() {
        let s = parse_schedule("5555550199;06/10/2010;11:00;06/11/2010;16:00", 0).expect("ok");
        assert_eq!(s.start.to_string(), "2010-06-10T11:00:00Z");
        assert_eq!(s.end.to_string(), "2010-06-11T16:00:00Z");
        let s = parse_schedule("5555550199;06/10/2010;11:00;06/11/2010;16:00", -300).expect("ok");
        assert_eq!(s.start.to_string(), "2010-06-10T16:00:00Z");
    }

    #[test]
    fn bad_schedules() {
        assert_eq!(parse_schedule("5555550199;06/10/2010;11:00", 0), Err(-306));
        assert_eq!(
            parse_schedule("x;06/10/2010;11:00;06/11/2010;16:00", 0),
            Err(-306)
        );
        assert_eq!(
            parse_schedule("5;02/30/2010;11:00;06/11/2010;16:00", 0),
            Err(-1028)
        );
        assert_eq!(
            parse_schedule("5;06/10/2010;25:00;06/11/2010;16:00", 0),
            Err(-1028)
        );
        assert_eq!(
            parse_schedule("5;06/10/2010;11:00;06/10/2010;10:00", 0),
            Err(-1028)
        );
        assert_eq!(
            parse_schedule("5;6/10/2010;11:00;06/11/2010;16:00", 0),
            Err(-1028)
        );
    }

    #[test]
    fn open_hours_in_a_time_zone() {
        let hours = OpenHours::parse(
            "America/Toronto",
            &["mon-fri 09:00-17:00".into()],
            &["2010-06-11".into()],
        )
        .expect("hours");
        let ts = |s: &str| s.parse::<Timestamp>().expect("ts");
        // Thursday 2010-06-10 12:00 Toronto = 16:00Z.
        assert!(hours.overlaps(ts("2010-06-10T15:00:00Z"), ts("2010-06-10T16:30:00Z")));
        // 08:00 Toronto = 12:00Z: before opening.
        assert!(!hours.overlaps(ts("2010-06-10T11:00:00Z"), ts("2010-06-10T12:59:00Z")));
        // Friday is closed, Saturday is weekend.
        assert!(!hours.overlaps(ts("2010-06-11T13:00:00Z"), ts("2010-06-12T20:00:00Z")));
        assert!(OpenHours::parse("Nowhere/City", &[], &[]).is_err());
        assert!(OpenHours::parse("UTC", &["mon 10:00-09:00".into()], &[]).is_err());
        assert!(
            OpenHours::always().overlaps(ts("2010-06-10T15:00:00Z"), ts("2010-06-10T16:30:00Z"))
        );
    }
}
