//! Identifiers ivrgate hands out: random, URL-safe, prefixed by what they name.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random(prefix: &str, len: usize) -> String {
    let mut rng = rand::rng();
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    for _ in 0..len {
        out.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    out
}

/// An event's `webhook-id`, the same on every delivery attempt.
pub fn event_id() -> String {
    random("msg_", 24)
}

/// An ivrgate call id.
pub fn call_id() -> String {
    random("call_", 22)
}

/// A decision id.
pub fn decision_id() -> String {
    random("dec_", 22)
}

/// This process's lease-owner name.
pub fn instance_id() -> String {
    random(&format!("{}-", std::process::id()), 8)
}
