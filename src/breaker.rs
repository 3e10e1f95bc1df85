//! A circuit breaker per webhook endpoint: after a run of failures the endpoint is left alone
//! for a while, then one probe decides whether it is back. Soft state: a restart simply starts
//! with every breaker closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

impl Breakers {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breakers {
            threshold: threshold.max(1),
            open_for,
            entries: Mutex::new(HashMap::new()),
        }
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
        self.lock().remove(endpoint);
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
            entry.open_until = Some(Instant::now() + self.open_for);
            entry.probing = false;
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
}
