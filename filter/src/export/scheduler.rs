//! Which spans go to the collector next, which calls are in flight, and how every answer is counted.
//! The adapter only performs the calls this returns and applies the counts: every span that leaves
//! the buffer ends as exactly one of exported or dropped, each drop with its reason.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use crate::buffer::SpanBuffer;
use crate::config::Collector;
use crate::metrics::Counter;
use crate::span::Span;

/// A map keyed by numbers the host hands out (tokens, context ids, addresses). Fixed hash keys:
/// std's random ones come from WASI `random_get`, and std panics (killing the VM) when that fails;
/// the keys are not attacker-chosen, so flooding is no concern.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// The root context ticks at least this often, whatever the flush interval: the counters kept in the
/// VM reach the host on each tick, so `/stats` is never more than this (or the flush interval, when
/// shorter) behind.
pub const PUBLISH_PERIOD_MS: u64 = 1000;

/// The regular tick period.
pub fn tick_period_ms(c: &Collector) -> u64 {
    c.flush_interval_ms.min(PUBLISH_PERIOD_MS)
}

/// Export calls of one root context.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Calls awaiting an answer: token → number of spans in the batch.
    in_flight: IdMap<u32, u64>,
    /// A full batch asked for a tick sooner than the flush interval.
    expedited: bool,
    /// When the next regular flush is due (ns); ticks come more often when they publish counters.
    next_flush_ns: u64,
}

/// How a collector call ended, as far as the host told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Response headers with this `:status`.
    Status(u16),
    /// No response: Envoy reports a reset, a timeout, a broken or oversized body as 0 headers.
    NoResponse,
    /// Headers arrived but `:status` could not be read or parsed.
    Unreadable,
}

fn interval_ns(c: &Collector) -> u64 {
    c.flush_interval_ms.saturating_mul(1_000_000)
}

/// Counter increments to apply, in order.
pub type Tally = Vec<(Counter, u64)>;

impl Scheduler {
    /// A scheduler whose first regular flush is one flush interval after `now_ns`.
    pub fn starting(now_ns: u64, c: &Collector) -> Scheduler {
        Scheduler {
            next_flush_ns: now_ns.saturating_add(interval_ns(c)),
            ..Scheduler::default()
        }
    }

    /// Whether a regular tick at `now_ns` flushes; if so the next flush is one interval later.
    pub fn flush_due(&mut self, now_ns: u64, c: &Collector) -> bool {
        if now_ns < self.next_flush_ns {
            return false;
        }
        self.next_flush_ns = now_ns.saturating_add(interval_ns(c));
        true
    }

    /// Takes the next batch to send, if there is room in flight. With `full_only`, only a complete
    /// batch goes: an answer or an expedited tick should not turn each trickle of spans into a call.
    pub fn next_batch(
        &self,
        buffer: &mut SpanBuffer,
        c: &Collector,
        full_only: bool,
    ) -> Option<Vec<Span>> {
        let enough = if full_only {
            buffer.len() >= c.max_batch
        } else {
            !buffer.is_empty()
        };
        if !enough || self.in_flight.len() >= c.max_in_flight {
            return None;
        }
        Some(buffer.take(c.max_batch))
    }

    /// The host accepted the call for `spans` spans under `token`.
    pub fn sent(&mut self, token: u32, spans: u64) -> Tally {
        match self.in_flight.insert(token, spans) {
            // A host that reuses a live token: the earlier batch can no longer be told apart.
            Some(lost) => export_failed(Counter::ExportFailedNoResponse, lost),
            None => Vec::new(),
        }
    }

    /// The host refused the call: its spans are dropped.
    pub fn not_sent(spans: u64) -> Tally {
        export_failed(Counter::ExportFailedNotSent, spans)
    }

    /// The answer to call `token`. A token not in flight (already counted at shutdown, or never
    /// sent) changes no span count: its spans were counted once already.
    pub fn answered(&mut self, token: u32, answer: Answer) -> Tally {
        let Some(spans) = self.in_flight.remove(&token) else {
            return vec![(Counter::InternalErrors, 1)];
        };
        match answer {
            Answer::Status(s) if (200..300).contains(&s) => vec![
                (Counter::ExportRequestsOk, 1),
                (Counter::SpansExported, spans),
            ],
            Answer::Status(_) => export_failed(Counter::ExportFailedStatus, spans),
            Answer::NoResponse => export_failed(Counter::ExportFailedNoResponse, spans),
            Answer::Unreadable => export_failed(Counter::ExportFailedStatus, spans),
        }
    }

    /// The root context goes away: buffered spans and spans in calls that will never be answered
    /// here are dropped, counted under their reason.
    pub fn shut_down(&mut self, buffer: &mut SpanBuffer) -> Tally {
        let buffered = buffer.take(buffer.len()).len() as u64;
        let in_flight: u64 = self.in_flight.drain().map(|(_, n)| n).sum();
        let n = buffered + in_flight;
        vec![
            (Counter::SpansDropped, n),
            (Counter::SpansDroppedShutdown, n),
        ]
    }

    /// A stream filled a batch: returns true when the root context should be asked to tick now
    /// (once, until the expedited tick has run).
    pub fn expedite(&mut self, buffer: &SpanBuffer, c: &Collector) -> bool {
        if buffer.len() < c.max_batch || self.expedited {
            return false;
        }
        self.expedited = true;
        true
    }

    /// Ends an expedited tick: returns whether this tick was one (the tick period then goes back to
    /// the flush interval).
    pub fn end_expedited(&mut self) -> bool {
        std::mem::take(&mut self.expedited)
    }

    pub fn is_expedited(&self) -> bool {
        self.expedited
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// A span pushed into the buffer displaced these older ones.
pub fn displaced(n: u64) -> Tally {
    vec![
        (Counter::SpansDropped, n),
        (Counter::SpansDroppedQueueFull, n),
    ]
}

fn export_failed(reason: Counter, spans: u64) -> Tally {
    vec![
        (Counter::ExportRequestsFailed, 1),
        (reason, 1),
        (Counter::SpansDropped, spans),
        (Counter::SpansDroppedExportFailed, spans),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SpanId;

    fn collector(max_batch: usize, max_in_flight: usize) -> Collector {
        Collector {
            max_batch,
            max_in_flight,
            ..Collector::default()
        }
    }

    fn buffer(n: u64) -> SpanBuffer {
        let mut b = SpanBuffer::new(100);
        for i in 0..n {
            let mut s = crate::span::fixture();
            s.id = SpanId(i + 1);
            b.push(s);
        }
        b
    }

    fn get(t: &Tally, c: Counter) -> u64 {
        t.iter().filter(|(k, _)| *k == c).map(|(_, n)| n).sum()
    }

    #[test]
    fn batches_by_room_and_size() {
        // (buffered, max_batch, max_in_flight, already in flight, full_only, batch expected)
        type Row = (u64, usize, usize, u32, bool, Option<usize>);
        let rows: &[Row] = &[
            (0, 5, 2, 0, false, None),     // nothing to send
            (3, 5, 2, 0, false, Some(3)),  // regular tick sends a short batch
            (3, 5, 2, 0, true, None),      // an answer or expedited tick waits for a full one
            (7, 5, 2, 0, true, Some(5)),   // a full batch goes at once
            (7, 5, 2, 2, false, None),     // no room in flight
            (12, 5, 3, 1, false, Some(5)), // room: one more batch of max_batch
        ];
        for (i, &(buffered, batch, room, flying, full_only, want)) in rows.iter().enumerate() {
            let mut s = Scheduler::default();
            for t in 0..flying {
                s.sent(t, 1);
            }
            let mut b = buffer(buffered);
            let got = s
                .next_batch(&mut b, &collector(batch, room), full_only)
                .map(|v| v.len());
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn every_answer_counts_its_spans_once() {
        // (answer, exported, dropped, failure reason counted)
        let rows: &[(Answer, u64, u64, Option<Counter>)] = &[
            (Answer::Status(202), 4, 0, None),
            (Answer::Status(200), 4, 0, None),
            (Answer::Status(299), 4, 0, None),
            (Answer::Status(300), 0, 4, Some(Counter::ExportFailedStatus)),
            (Answer::Status(429), 0, 4, Some(Counter::ExportFailedStatus)),
            (Answer::Status(503), 0, 4, Some(Counter::ExportFailedStatus)),
            (
                Answer::NoResponse,
                0,
                4,
                Some(Counter::ExportFailedNoResponse),
            ),
            (Answer::Unreadable, 0, 4, Some(Counter::ExportFailedStatus)),
        ];
        for (i, &(answer, exported, dropped, reason)) in rows.iter().enumerate() {
            let mut s = Scheduler::default();
            s.sent(7, 4);
            let t = s.answered(7, answer);
            assert_eq!(get(&t, Counter::SpansExported), exported, "row {i}");
            assert_eq!(get(&t, Counter::SpansDropped), dropped, "row {i}");
            assert_eq!(
                get(&t, Counter::SpansDroppedExportFailed),
                dropped,
                "row {i}"
            );
            let failed = u64::from(reason.is_some());
            assert_eq!(get(&t, Counter::ExportRequestsFailed), failed, "row {i}");
            assert_eq!(get(&t, Counter::ExportRequestsOk), 1 - failed, "row {i}");
            if let Some(r) = reason {
                assert_eq!(get(&t, r), 1, "row {i}");
            }
            assert_eq!(s.in_flight(), 0, "row {i}");
            // The same token again (a host repeating itself) counts no span twice.
            let again = s.answered(7, answer);
            assert_eq!(get(&again, Counter::SpansExported), 0, "row {i}");
            assert_eq!(get(&again, Counter::SpansDropped), 0, "row {i}");
            assert_eq!(get(&again, Counter::InternalErrors), 1, "row {i}");
        }
    }

    #[test]
    fn refused_call_drops_its_batch() {
        let t = Scheduler::not_sent(9);
        assert_eq!(get(&t, Counter::ExportRequestsFailed), 1);
        assert_eq!(get(&t, Counter::ExportFailedNotSent), 1);
        assert_eq!(get(&t, Counter::SpansDropped), 9);
    }

    #[test]
    fn reused_token_drops_the_earlier_batch() {
        let mut s = Scheduler::default();
        assert!(s.sent(1, 3).is_empty());
        let t = s.sent(1, 5);
        assert_eq!(get(&t, Counter::SpansDropped), 3);
        let t = s.answered(1, Answer::Status(202));
        assert_eq!(get(&t, Counter::SpansExported), 5);
    }

    #[test]
    fn shutdown_counts_buffered_and_in_flight() {
        let mut s = Scheduler::default();
        s.sent(1, 3);
        s.sent(2, 4);
        let mut b = buffer(6);
        let t = s.shut_down(&mut b);
        assert_eq!(get(&t, Counter::SpansDropped), 13);
        assert_eq!(get(&t, Counter::SpansDroppedShutdown), 13);
        assert!(b.is_empty());
        assert_eq!(s.in_flight(), 0);
        // An answer after shutdown was already counted as dropped.
        let late = s.answered(1, Answer::Status(202));
        assert_eq!(get(&late, Counter::SpansExported), 0);
    }

    #[test]
    fn expedites_once_per_full_batch() {
        let c = collector(3, 1);
        let mut s = Scheduler::default();
        assert!(!s.expedite(&buffer(2), &c));
        assert!(s.expedite(&buffer(3), &c));
        assert!(!s.expedite(&buffer(4), &c), "already asked");
        assert!(s.is_expedited());
        assert!(s.end_expedited());
        assert!(!s.end_expedited());
        assert!(s.expedite(&buffer(3), &c));
    }

    /// Ticks come every second to publish counters; a 60 s flush interval still flushes once a
    /// minute, and an interval below a second ticks (and flushes) at its own pace.
    #[test]
    fn regular_flushes_once_per_interval_while_ticks_publish_every_second() {
        let mut c = collector(3, 1);
        c.flush_interval_ms = 60_000;
        assert_eq!(tick_period_ms(&c), PUBLISH_PERIOD_MS);
        let s = 1_000_000_000;
        let mut sch = Scheduler::starting(5 * s, &c);
        let due: Vec<u64> = (6..=130).filter(|t| sch.flush_due(t * s, &c)).collect();
        assert_eq!(due, [65, 125]);
        c.flush_interval_ms = 100;
        assert_eq!(tick_period_ms(&c), 100);
        let mut sch = Scheduler::starting(0, &c);
        assert!(!sch.flush_due(99_000_000, &c));
        assert!(sch.flush_due(100_000_000, &c));
        assert!(sch.flush_due(200_000_000, &c));
        // A clock that always reads 0 is handled by the adapter (it flushes every tick).
        assert!(Scheduler::default().flush_due(0, &c));
    }

    #[test]
    fn displaced_spans_are_queue_drops() {
        let t = displaced(2);
        assert_eq!(get(&t, Counter::SpansDropped), 2);
        assert_eq!(get(&t, Counter::SpansDroppedQueueFull), 2);
    }
}
