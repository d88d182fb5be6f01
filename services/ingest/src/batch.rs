//! Micro-batching: gather ready windows until `max` of them or until `linger` has passed since
//! the first, whichever comes first.

use std::time::{Duration, Instant};

pub struct Batcher<T> {
    max: usize,
    linger: Duration,
    items: Vec<T>,
    first_at: Option<Instant>,
}

impl<T> Batcher<T> {
    pub fn new(max: usize, linger: Duration) -> Self {
        Batcher {
            max: max.max(1),
            linger,
            items: Vec::new(),
            first_at: None,
        }
    }

    /// Adds an item; returns a full batch when this one filled it.
    pub fn push(&mut self, item: T, now: Instant) -> Option<Vec<T>> {
        if self.items.is_empty() {
            self.first_at = Some(now);
        }
        self.items.push(item);
        (self.items.len() >= self.max).then(|| self.take())
    }

    /// When the pending batch must go even if not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.linger)
    }

    /// Returns the pending batch if its linger time is over.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<T>> {
        match self.deadline() {
            Some(d) if now >= d => Some(self.take()),
            _ => None,
        }
    }

    /// Takes whatever is pending (shutdown, drain).
    pub fn take(&mut self) -> Vec<T> {
        self.first_at = None;
        std::mem::take(&mut self.items)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_on_size() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, Duration::from_millis(50));
        assert_eq!(b.push(1, t0), None);
        assert_eq!(b.push(2, t0), None);
        assert_eq!(b.push(3, t0), Some(vec![1, 2, 3]));
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn flushes_on_linger_measured_from_first_item() {
        let t0 = Instant::now();
        let mut b = Batcher::new(10, Duration::from_millis(50));
        b.push("a", t0);
        b.push("b", t0 + Duration::from_millis(40));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(b.poll(t0 + Duration::from_millis(49)), None);
        assert_eq!(b.poll(t0 + Duration::from_millis(50)), Some(vec!["a", "b"]));
        assert_eq!(b.poll(t0 + Duration::from_secs(9)), None);
    }
}
