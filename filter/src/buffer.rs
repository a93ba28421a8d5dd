//! The per-VM span buffer: bounded, dropping the oldest span when full, so a slow or absent collector
//! costs memory up to `max_queue` spans and never more.

use std::collections::VecDeque;

use crate::span::Span;

#[derive(Debug)]
pub struct SpanBuffer {
    queue: VecDeque<Span>,
    capacity: usize,
}

impl SpanBuffer {
    pub fn new(capacity: usize) -> SpanBuffer {
        SpanBuffer {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a span; returns how many old spans were dropped to make room (0 or 1).
    pub fn push(&mut self, span: Span) -> u64 {
        let mut dropped = 0;
        while self.queue.len() >= self.capacity {
            self.queue.pop_front();
            dropped += 1;
        }
        self.queue.push_back(span);
        dropped
    }

    /// Removes and returns up to `max` of the oldest spans.
    pub fn take(&mut self, max: usize) -> Vec<Span> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SpanId, TraceId};

    fn span(n: u64) -> Span {
        let mut s = crate::span::fixture();
        s.trace_id = TraceId::generate(0, n);
        s.id = SpanId(n);
        s
    }

    #[test]
    fn drops_oldest_when_full() {
        let mut b = SpanBuffer::new(3);
        let dropped: u64 = (1..=5).map(|n| b.push(span(n))).sum();
        assert_eq!(dropped, 2);
        let ids: Vec<u64> = b.take(10).iter().map(|s| s.id.0).collect();
        assert_eq!(ids, vec![3, 4, 5]);
        assert!(b.is_empty());
    }

    #[test]
    fn takes_in_batches() {
        let mut b = SpanBuffer::new(10);
        for n in 1..=7 {
            b.push(span(n));
        }
        assert_eq!(b.take(5).len(), 5);
        assert_eq!(b.len(), 2);
        assert_eq!(b.take(5).len(), 2);
        assert_eq!(b.take(5).len(), 0);
    }
}
