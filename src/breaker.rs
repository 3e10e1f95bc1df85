//! A circuit breaker per webhook endpoint: after a run of failures the endpoint is left alone
//! for a while, then one probe decides whether it is back. Soft state: a restart simply starts
//! with every breaker closed. Where the breakers are shared ([`Breakers::shared`]), each
//! opening and each close after one is told to the other instances on the store
//! ([`crate::cluster`]), and [`Breakers::adopt`] takes in what they opened.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::cluster::BreakerNews;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    open_for: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    /// Where openings and closes go to be shared, and under which scope.
    news: Option<(&'static str, mpsc::Sender<BreakerNews>)>,
}

impl Breakers {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breakers {
            threshold: threshold.max(1),
            open_for,
            entries: Mutex::new(HashMap::new()),
            news: None,
        }
    }

    /// Breakers whose openings and closes are sent to `news` under `scope`, to be shared.
    pub fn shared(
        threshold: u32,
        open_for: Duration,
        scope: &'static str,
        news: mpsc::Sender<BreakerNews>,
    ) -> Self {
        Breakers {
            news: Some((scope, news)),
            ..Breakers::new(threshold, open_for)
        }
    }

    fn tell(&self, news: impl FnOnce(&'static str) -> BreakerNews) {
        if let Some((scope, tx)) = &self.news {
            // Full only when the store does not keep up; the breaker still holds here.
            if tx.try_send(news(scope)).is_err() {
                tracing::warn!(
                    scope,
                    "circuit breaker news not shared: too many waiting to be written"
                );
            }
        }
    }

    /// Takes in a breaker another instance opened, open for `left` from now: an endpoint
    /// that failed there is left alone here too. Returns whether this opened (or lengthened)
    /// the breaker here.
    pub fn adopt(&self, endpoint: &str, left: Duration) -> bool {
        let until = Instant::now() + left;
        let mut entries = self.lock();
        let entry = entries.entry(endpoint.to_owned()).or_insert(Entry {
            failures: 0,
            open_until: None,
            probing: false,
        });
        // Within a few milliseconds it is the same opening (told back by the store).
        let later = entry
            .open_until
            .is_none_or(|u| until > u + Duration::from_millis(50));
        if later {
            entry.failures = self.threshold;
            entry.open_until = Some(until);
            entry.probing = false;
        }
        later
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request to `endpoint` may go now. In the half-open state one probe is let
    /// through at a time.
    pub fn try_acquire(&self, endpoint: &str) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(endpoint) else {
            return true;
        };
        match entry.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if entry.probing => false,
            Some(_) => {
                entry.probing = true;
                true
            }
        }
    }

    /// Whether a request could go now, without taking the half-open probe.
    pub fn try_peek(&self, endpoint: &str) -> bool {
        let entries = self.lock();
        match entries.get(endpoint) {
            None => true,
            Some(entry) => match entry.open_until {
                None => true,
                Some(until) => Instant::now() >= until && !entry.probing,
            },
        }
    }

    pub fn state(&self, endpoint: &str) -> State {
        let entries = self.lock();
        match entries.get(endpoint).and_then(|e| e.open_until) {
            None => State::Closed,
            Some(until) if Instant::now() < until => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    pub fn success(&self, endpoint: &str) {
        let removed = self.lock().remove(endpoint);
        if removed.is_some_and(|e| e.open_until.is_some()) {
            self.tell(|scope| BreakerNews::Closed {
                scope,
                endpoint: endpoint.to_owned(),
            });
        }
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn failure(&self, endpoint: &str) -> bool {
        let mut entries = self.lock();
        let entry = entries.entry(endpoint.to_owned()).or_insert(Entry {
            failures: 0,
            open_until: None,
            probing: false,
        });
        entry.failures += 1;
        let was_open = entry.open_until.is_some();
        if entry.failures >= self.threshold || entry.probing {
            // News is an opening: from closed, or a failed probe; not a late failure of a
            // request sent before it opened.
            let news = !was_open || entry.probing;
            entry.open_until = Some(Instant::now() + self.open_for);
            entry.probing = false;
            drop(entries);
            if !news {
                return false;
            }
            let open_ms = i64::try_from(self.open_for.as_millis()).unwrap_or(i64::MAX);
            self.tell(|scope| BreakerNews::Tripped {
                scope,
                endpoint: endpoint.to_owned(),
                open_ms,
            });
            return !was_open;
        }
        false
    }

    /// Endpoints whose breaker is open right now.
    pub fn open_endpoints(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, e)| e.open_until.is_some_and(|u| now < u))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every endpoint with a non-closed breaker and its state, for metrics.
    pub fn snapshot(&self) -> Vec<(String, State)> {
        let keys: Vec<String> = self.lock().keys().cloned().collect();
        keys.into_iter()
            .map(|k| {
                let s = self.state(&k);
                (k, s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let b = Breakers::new(3, Duration::from_millis(30));
        assert!(!b.failure("a"));
        assert!(!b.failure("a"));
        assert!(b.failure("a"));
        assert_eq!(b.state("a"), State::Open);
        assert!(!b.try_acquire("a"));
        assert!(b.try_acquire("other"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.try_acquire("a"), "one probe after the open period");
        assert!(!b.try_acquire("a"), "only one probe at a time");
        b.failure("a");
        assert_eq!(b.state("a"), State::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.try_acquire("a"));
        b.success("a");
        assert_eq!(b.state("a"), State::Closed);
    }

    #[test]
    fn shared_breakers_tell_openings_and_closes_and_adopt_others() {
        let (tx, mut rx) = mpsc::channel(8);
        let b = Breakers::shared(2, Duration::from_millis(30), "delivery", tx);
        b.failure("a");
        assert!(rx.try_recv().is_err(), "one failure is no news");
        b.failure("a");
        assert_eq!(
            rx.try_recv().expect("tripped"),
            BreakerNews::Tripped {
                scope: "delivery",
                endpoint: "a".into(),
                open_ms: 30
            }
        );
        b.failure("a");
        assert!(
            rx.try_recv().is_err(),
            "a late failure while open is no news"
        );
        b.success("never-failed");
        assert!(
            rx.try_recv().is_err(),
            "a closed breaker's success is no news"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.try_acquire("a"));
        b.success("a");
        assert_eq!(
            rx.try_recv().expect("closed"),
            BreakerNews::Closed {
                scope: "delivery",
                endpoint: "a".into()
            }
        );
        // Another instance's opening holds here, without being told back.
        assert!(b.adopt("b", Duration::from_millis(30)));
        assert!(!b.adopt("b", Duration::from_millis(30)), "the same opening");
        assert_eq!(b.state("b"), State::Open);
        assert!(!b.try_acquire("b"));
        assert!(rx.try_recv().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state("b"), State::HalfOpen);
        assert!(b.try_acquire("b"), "then one probe here too");
    }
}
