//! The memory budget for request bodies in flight (`server.max_bodies_in_flight_bytes`).
//!
//! Every legacy request reserves its body's size before the body is read: by its
//! `Content-Length` up front, or chunk by chunk for a chunked body. The reservation is held
//! until the request is answered (decoding, storing and rendering happen under it) and given
//! back when it is dropped. A request that does not fit gets its platform's "busy, send it
//! again" answer instead of being read, so concurrent bodies can never add up to more memory
//! than the operator allowed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of request bodies currently reserved, shared by every connection.
#[derive(Debug, Default)]
pub struct BodyBudget {
    in_flight: AtomicUsize,
}

impl BodyBudget {
    pub fn new() -> Arc<BodyBudget> {
        Arc::new(BodyBudget::default())
    }

    /// Bytes reserved right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if the total stays within `limit`; `None` when it would not.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize, limit: usize) -> Option<Reservation> {
        self.add(bytes, limit).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn add(&self, bytes: usize, limit: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                current.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }
}

/// A share of the budget, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// The bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to `total` bytes (a chunked body read further); `false`, and
    /// unchanged, when the budget cannot hold it.
    pub fn grow_to(&mut self, total: usize, limit: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        if self.budget.add(total - self.bytes, limit) {
            self.bytes = total;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .in_flight
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_within_the_limit_and_gives_back_on_drop() {
        let budget = BodyBudget::new();
        let a = budget.try_reserve(600, 1000).expect("fits");
        assert!(budget.try_reserve(500, 1000).is_none());
        let mut b = budget.try_reserve(400, 1000).expect("fits exactly");
        assert_eq!(budget.in_flight(), 1000);
        assert!(!b.grow_to(401, 1000));
        assert_eq!(b.bytes(), 400);
        drop(a);
        assert!(b.grow_to(900, 1000));
        assert_eq!(budget.in_flight(), 900);
        drop(b);
        assert_eq!(budget.in_flight(), 0);
        // An empty body always fits, even in a full budget.
        let _full = budget.try_reserve(1000, 1000).expect("fits");
        assert!(budget.try_reserve(0, 1000).is_some());
    }
}
