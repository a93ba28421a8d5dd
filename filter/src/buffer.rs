//! The per-VM span buffer: bounded, dropping the oldest span when full, so a slow or absent collector
//! costs memory up to `max_queue` spans and never more. Batches waiting for a retry stay inside
//! that bound; being the oldest spans, they are the first to give way.

use std::collections::VecDeque;

use crate::span::Span;

/// A batch whose export failed, waiting for its next send.
#[derive(Debug)]
pub struct Retry {
    pub spans: Vec<Span>,
    /// Sends so far.
    pub sends: u64,
    /// Not sent again before this time (ns).
    pub due_ns: u64,
}

#[derive(Debug)]
pub struct SpanBuffer {
    /// Failed batches, in the order they failed: a few at a time (at most `max_in_flight` fail
    /// together), so a plain list costs less code than a second deque.
    retries: Vec<Retry>,
    /// Spans in `retries`.
    retried: usize,
    /// Spans never sent, oldest first.
    queue: VecDeque<Span>,
    capacity: usize,
}

impl SpanBuffer {
    pub fn new(capacity: usize) -> SpanBuffer {
        SpanBuffer {
            retries: Vec::new(),
            retried: 0,
            queue: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a span; returns how many old spans were dropped to make room (0 or 1).
    pub fn push(&mut self, span: Span) -> u64 {
        let dropped = self.make_room(1);
        self.queue.push_back(span);
        dropped
    }

    /// Keeps a failed batch for another send; returns how many spans were dropped to stay within
    /// the bound (the oldest: retried spans before fresh ones, possibly this batch's own).
    pub fn retry(&mut self, retry: Retry) -> u64 {
        if retry.spans.is_empty() {
            return 0;
        }
        self.retried += retry.spans.len();
        self.retries.push(retry);
        self.make_room(0)
    }

    /// Removes and returns up to `max` of the oldest spans never sent.
    pub fn take(&mut self, max: usize) -> Vec<Span> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// Removes and returns the first batch whose retry is due at `now_ns`.
    pub fn take_due(&mut self, now_ns: u64) -> Option<Retry> {
        let i = self.retries.iter().position(|r| r.due_ns <= now_ns)?;
        let r = self.retries.remove(i);
        self.retried = self.retried.saturating_sub(r.spans.len());
        Some(r)
    }

    /// Whether a retry is due at `now_ns`.
    pub fn retry_due(&self, now_ns: u64) -> bool {
        self.retries.iter().any(|r| r.due_ns <= now_ns)
    }

    /// Removes everything, retried spans first.
    pub fn drain(&mut self) -> Vec<Span> {
        self.retried = 0;
        let mut all: Vec<Span> = self.retries.drain(..).flat_map(|r| r.spans).collect();
        all.extend(self.queue.drain(..));
        all
    }

    /// Spans held: never sent and waiting for a retry.
    pub fn len(&self) -> usize {
        self.queue.len() + self.retried
    }

    /// Spans never sent.
    pub fn fresh(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the oldest spans until `incoming` more fit; returns how many it dropped.
    fn make_room(&mut self, incoming: usize) -> u64 {
        let mut dropped = 0;
        while self.len() + incoming > self.capacity && self.drop_oldest() {
            dropped += 1;
        }
        dropped
    }

    fn drop_oldest(&mut self) -> bool {
        if let Some(r) = self.retries.first_mut() {
            // A batch holds at most max_batch spans: removing its first is a short move.
            if !r.spans.is_empty() {
                r.spans.remove(0);
                self.retried = self.retried.saturating_sub(1);
            }
            if r.spans.is_empty() {
                self.retries.remove(0);
            }
            return true;
        }
        self.queue.pop_front().is_some()
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

    fn retry(ids: &[u64], sends: u64, due_ns: u64) -> Retry {
        Retry {
            spans: ids.iter().map(|&n| span(n)).collect(),
            sends,
            due_ns,
        }
    }

    fn ids(spans: &[Span]) -> Vec<u64> {
        spans.iter().map(|s| s.id.0).collect()
    }

    #[test]
    fn retried_batches_count_against_the_bound_and_give_way_first() {
        let mut b = SpanBuffer::new(4);
        b.push(span(10));
        b.push(span(11));
        assert_eq!(
            b.retry(retry(&[1, 2, 3], 1, 50)),
            1,
            "5 held > 4: the oldest retried span"
        );
        assert_eq!((b.len(), b.fresh()), (4, 2));
        assert_eq!(
            b.push(span(12)),
            1,
            "full: retried span 2 gives way, not fresh 10"
        );
        assert_eq!(b.push(span(13)), 1);
        assert_eq!(b.push(span(14)), 1, "retries gone: fresh 10 gives way");
        assert!(b.take_due(u64::MAX).is_none());
        assert_eq!(ids(&b.take(10)), vec![11, 12, 13, 14]);
        assert_eq!(
            b.retry(Retry {
                spans: Vec::new(),
                sends: 1,
                due_ns: 0
            }),
            0
        );
        assert!(b.is_empty());
    }

    #[test]
    fn retries_go_when_due_in_failure_order() {
        let mut b = SpanBuffer::new(10);
        b.retry(retry(&[1], 1, 300));
        b.retry(retry(&[2], 2, 100));
        b.retry(retry(&[3], 1, 100));
        assert!(!b.retry_due(99));
        assert!(b.take_due(99).is_none());
        let first = b.take_due(100).map(|r| (ids(&r.spans), r.sends));
        assert_eq!(first, Some((vec![2], 2)));
        assert_eq!(b.take_due(200).map(|r| ids(&r.spans)), Some(vec![3]));
        assert!(b.retry_due(300));
        b.push(span(4));
        assert_eq!(ids(&b.drain()), vec![1, 4], "retried first, then fresh");
        assert!(b.is_empty());
    }
}
