//! Identifiers ivrgate hands out: URL-safe, prefixed by what they name. Those that key a
//! stored row (a call, an event) start with the time they were made, so rows made together
//! sit together in the store's indexes: a batch of new calls touches the last page or two of
//! an index, not a random page per call (which the store writes out again, page by page, on
//! every commit).

use rand::Rng;

/// In ASCII order, so ids compare as the numbers they spell.
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of an id's time: milliseconds since 1970 in base 62, good for 6,900 years.
const TIME_CHARS: usize = 8;

fn push_random(out: &mut String, len: usize) {
    let mut rng = rand::rng();
    for _ in 0..len {
        out.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
}

fn random(prefix: &str, len: usize) -> String {
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    push_random(&mut out, len);
    out
}

/// `prefix`, the time in [`TIME_CHARS`] characters, then random characters up to `len`.
fn ordered(prefix: &str, len: usize) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ordered_at(prefix, len, ms)
}

fn ordered_at(prefix: &str, len: usize, ms: u64) -> String {
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    let mut digits = [b'0'; TIME_CHARS];
    let mut rest = ms;
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(rest % 62) as usize];
        rest /= 62;
    }
    out.extend(digits.iter().map(|&b| b as char));
    push_random(&mut out, len - TIME_CHARS);
    out
}

/// An event's `webhook-id`, the same on every delivery attempt.
pub fn event_id() -> String {
    ordered("msg_", 24)
}

/// An ivrgate call id.
pub fn call_id() -> String {
    ordered("call_", 22)
}

/// A decision id.
pub fn decision_id() -> String {
    random("dec_", 22)
}

/// This process's lease-owner name.
pub fn instance_id() -> String {
    random(&format!("{}-", std::process::id()), 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_sort_by_their_time_and_keep_their_length() {
        let times = [
            0u64,
            61,
            62,
            1_764_000_000_000,
            1_764_000_000_001,
            62u64.pow(8) - 1,
        ];
        let ids: Vec<String> = times.iter().map(|&t| ordered_at("call_", 22, t)).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        assert!(ids
            .iter()
            .all(|id| id.len() == 27 && id.starts_with("call_")));
        assert_eq!(&ids[0][5..13], "00000000");
        assert_eq!(&ids[2][5..13], "00000010");
        assert_eq!(&ids[5][5..13], "zzzzzzzz");
        assert!(call_id().len() == 27 && event_id().len() == 28);
    }

    #[test]
    fn ids_made_in_one_millisecond_differ() {
        let a = ordered_at("msg_", 24, 1_764_000_000_000);
        let b = ordered_at("msg_", 24, 1_764_000_000_000);
        assert_eq!(a[..12], b[..12]);
        assert_ne!(a, b);
    }
}
