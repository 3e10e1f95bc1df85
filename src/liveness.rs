//! Proof that the gateway's loops still turn, for the systemd watchdog: the store's writer,
//! the delivery loop and the timer loop each [`Beat::beat`] once per turn, and the daemon
//! pings the watchdog only while every one of them turned recently ([`Liveness::stuck`]).
//! A process whose HTTP side answers while its deliveries stand still is not alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The instant every beat is measured from (the first use in this process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// One loop's last turn, as milliseconds since [`epoch`] (monotonic).
#[derive(Debug)]
pub struct Beat {
    last_ms: AtomicU64,
}

impl Default for Beat {
    /// A new beat counts as a turn now: a loop that has not started yet is not stuck.
    fn default() -> Self {
        let beat = Beat {
            last_ms: AtomicU64::new(0),
        };
        beat.beat();
        beat
    }
}

impl Beat {
    /// Records a turn of the loop.
    pub fn beat(&self) {
        let now = epoch().elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Time since the last turn.
    pub fn age(&self) -> Duration {
        let now = epoch().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The core's own loops (the store's writer has its beat in the store).
#[derive(Debug, Default)]
pub struct Liveness {
    pub delivery: Beat,
    pub timers: Beat,
}

/// Names the first loop, among `beats`, that has not turned within `limit`, with its age.
pub fn stuck<'a>(
    beats: impl IntoIterator<Item = (&'a str, &'a Beat)>,
    limit: Duration,
) -> Option<(&'a str, Duration)> {
    beats
        .into_iter()
        .map(|(name, beat)| (name, beat.age()))
        .find(|(_, age)| *age > limit)
}

/// TEST-ONLY fault hook: while the file named by the environment variable
/// `IVRGATE_TEST_STALL_DELIVERY` exists, the delivery loop stops turning (it waits here), as a
/// loop stuck on a hung call would. The watchdog tests use it to prove that pings stop. Unset
/// (always, in production) it costs one branch on a value read once.
pub async fn test_stall_delivery() {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let path = PATH.get_or_init(|| std::env::var_os("IVRGATE_TEST_STALL_DELIVERY").map(Into::into));
    if let Some(path) = path {
        let mut logged = false;
        while path.exists() {
            if !logged {
                tracing::warn!(path = %path.display(), "IVRGATE_TEST_STALL_DELIVERY: the delivery loop is held (test-only fault hook)");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_ages_until_the_next_turn() {
        let beat = Beat::default();
        let other = Beat::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(beat.age() >= Duration::from_millis(30));
        other.beat();
        let limit = Duration::from_millis(20);
        // `other` turned just now, but a loop that slept past the limit is named.
        let (name, age) = stuck([("a", &beat), ("b", &other)], limit).expect("a is stuck");
        assert_eq!(name, "a");
        assert!(age >= Duration::from_millis(30));
        beat.beat();
        assert!(stuck([("a", &beat), ("b", &other)], Duration::from_secs(10)).is_none());
    }
}
