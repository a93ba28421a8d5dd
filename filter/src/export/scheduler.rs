//! Which spans go to the collector next, which calls are in flight, and how every answer is counted.
//! The adapter only performs the calls this returns and applies the counts: every span that leaves
//! the buffer ends as exactly one of exported or dropped, each drop with its reason.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use crate::buffer::{Retry, SpanBuffer};
use crate::config::{self, Collector};
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
    /// Calls awaiting an answer, by token: at most `max_in_flight` (≤ 64), so a list searched
    /// in place costs less code and time than another map.
    in_flight: Vec<(u32, Batch)>,
    /// A full batch asked for a tick sooner than the flush interval.
    expedited: bool,
    /// When the next regular flush is due (ns); ticks come more often when they publish counters.
    next_flush_ns: u64,
    /// A collector's `Retry-After`: nothing is sent before this (ns).
    hold_until_ns: u64,
    /// The root context is going away: everything held goes out once, nothing is retried.
    draining: bool,
}

/// Spans sent (or about to be sent) in one call.
#[derive(Debug)]
pub struct Batch {
    pub spans: Vec<Span>,
    /// Earlier sends of these spans.
    pub sends: u64,
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

/// An answer and when it came.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub answer: Answer,
    /// The answer's `Retry-After`, when it had one (see [`reads_retry_after`]).
    pub retry_after_ms: Option<u64>,
    pub now_ns: u64,
    /// A random draw for the backoff's jitter.
    pub jitter: u64,
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

    /// Whether a regular tick at `now_ns` flushes: once per flush interval (the next one is then
    /// an interval later), or sooner when a retry has come due.
    pub fn flush_due(&mut self, now_ns: u64, buffer: &SpanBuffer, c: &Collector) -> bool {
        if now_ns < self.next_flush_ns {
            return buffer.retry_due(now_ns) && now_ns >= self.hold_until_ns;
        }
        self.next_flush_ns = now_ns.saturating_add(interval_ns(c));
        true
    }

    /// Takes the next batch to send, if there is room in flight: a retry that has come due first,
    /// then spans never sent. With `full_only`, only a complete batch of new spans goes: an answer
    /// or an expedited tick should not turn each trickle of spans into a call.
    pub fn next_batch(
        &self,
        buffer: &mut SpanBuffer,
        c: &Collector,
        full_only: bool,
        now_ns: u64,
    ) -> Option<Batch> {
        if self.draining {
            return self.next_batch_draining(buffer, c);
        }
        if self.in_flight.len() >= c.max_in_flight {
            return None;
        }
        if now_ns < self.hold_until_ns {
            return None;
        }
        if let Some(r) = buffer.take_due(now_ns) {
            return Some(Batch {
                spans: r.spans,
                sends: r.sends,
            });
        }
        let enough = if full_only {
            buffer.fresh() >= c.max_batch
        } else {
            buffer.fresh() > 0
        };
        enough.then(|| Batch {
            spans: buffer.take(c.max_batch),
            sends: 0,
        })
    }

    /// While draining, everything goes at once, retries first whatever their due time: the last
    /// answer then comes within one `timeout_ms`, however much is held.
    fn next_batch_draining(&self, buffer: &mut SpanBuffer, c: &Collector) -> Option<Batch> {
        if let Some(r) = buffer.take_due(u64::MAX) {
            return Some(Batch {
                spans: r.spans,
                sends: r.sends,
            });
        }
        let spans = buffer.take(c.max_batch);
        (!spans.is_empty()).then_some(Batch { spans, sends: 0 })
    }

    /// The host accepted the call for `batch` under `token`.
    pub fn sent(&mut self, token: u32, batch: Batch) -> Tally {
        let lost = self.take_in_flight(token);
        self.in_flight.push((token, batch));
        match lost {
            // A host that reuses a live token: the earlier batch can no longer be told apart.
            Some(lost) => export_failed(Counter::ExportFailedNoResponse, count(&lost)),
            None => Vec::new(),
        }
    }

    /// The host refused the call (an unknown cluster, a bad header): its spans are dropped; the
    /// same call would be refused again.
    pub fn not_sent(batch: &Batch) -> Tally {
        export_failed(Counter::ExportFailedNotSent, count(batch))
    }

    /// The answer to call `token`. A token not in flight (already counted at shutdown, or never
    /// sent) changes no span count: its spans were counted once already. A failure that may pass
    /// (no response, 5xx, 429) puts the batch back for a later send until `max_attempts` sends
    /// have failed; any other failure drops it.
    pub fn answered(
        &mut self,
        token: u32,
        reply: Reply,
        buffer: &mut SpanBuffer,
        c: &Collector,
    ) -> Tally {
        let Some(batch) = self.take_in_flight(token) else {
            return vec![(Counter::InternalErrors, 1)];
        };
        let spans = count(&batch);
        let reason = match reply.answer {
            Answer::Status(s) if (200..300).contains(&s) => {
                return vec![
                    (Counter::ExportRequestsOk, 1),
                    (Counter::SpansExported, spans),
                ];
            }
            Answer::NoResponse => Counter::ExportFailedNoResponse,
            Answer::Status(_) | Answer::Unreadable => Counter::ExportFailedStatus,
        };
        let r = &c.retry;
        if let Some(ms) = reply.retry_after_ms {
            let hold = ms.min(r.max_backoff_ms).saturating_mul(1_000_000);
            self.hold_until_ns = self.hold_until_ns.max(reply.now_ns.saturating_add(hold));
        }
        let sends = batch.sends + 1;
        if !retryable(reply.answer) || self.draining {
            return export_failed(reason, spans);
        }
        if sends >= r.max_attempts {
            let mut t = export_failed(reason, spans);
            t.push((Counter::ExportGaveUp, 1));
            return t;
        }
        let wait_ms = backoff_ms(r, sends, reply.jitter).max(reply.retry_after_ms.unwrap_or(0));
        let due_ns = reply
            .now_ns
            .saturating_add(wait_ms.min(r.max_backoff_ms).saturating_mul(1_000_000));
        let dropped = buffer.retry(Retry {
            spans: batch.spans,
            sends,
            due_ns,
        });
        let mut t = vec![
            (Counter::ExportRequestsFailed, 1),
            (reason, 1),
            (Counter::ExportRetries, 1),
        ];
        t.extend(displaced(dropped));
        t
    }

    /// The root context is asked to go away: from now on everything held is sent once, without
    /// waiting for room in flight, and no failure is retried.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The root context goes away: buffered spans and spans in calls that will never be answered
    /// here are dropped, counted under their reason.
    pub fn shut_down(&mut self, buffer: &mut SpanBuffer) -> Tally {
        let buffered = buffer.drain().len() as u64;
        let in_flight: u64 = self.in_flight.drain(..).map(|(_, b)| count(&b)).sum();
        too_late(buffered + in_flight)
    }

    /// A stream filled a batch: returns true when the root context should be asked to tick now
    /// (once, until the expedited tick has run).
    pub fn expedite(&mut self, buffer: &SpanBuffer, c: &Collector) -> bool {
        if buffer.fresh() < c.max_batch || self.expedited {
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

    fn take_in_flight(&mut self, token: u32) -> Option<Batch> {
        let i = self.in_flight.iter().position(|(t, _)| *t == token)?;
        Some(self.in_flight.swap_remove(i).1)
    }
}

/// Failures a later send may get past: the collector was unreachable, timed out, broke its answer,
/// was overloaded (429) or failed (5xx). A 4xx other than 429 would be refused again.
pub fn retryable(answer: Answer) -> bool {
    match answer {
        Answer::NoResponse => true,
        Answer::Status(s) => s == 429 || (500..600).contains(&s),
        Answer::Unreadable => false,
    }
}

/// Whether the answer's `Retry-After` is worth a header read (RFC 9110: with 429 and 503).
pub fn reads_retry_after(answer: Answer) -> bool {
    matches!(answer, Answer::Status(429 | 503))
}

/// A `Retry-After` in seconds, as milliseconds. The HTTP-date form is not read (it would need the
/// wall clock to agree with the collector's): the backoff then applies alone.
pub fn parse_retry_after(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v)
        .ok()?
        .parse::<u64>()
        .ok()
        .map(|s| s * 1000)
}

/// The wait before send `sends + 1`: `initial_backoff_ms` doubled per earlier retry, capped at
/// `max_backoff_ms`, then jittered into its upper half so VMs that failed together retry apart.
pub fn backoff_ms(r: &config::Retry, sends: u64, jitter: u64) -> u64 {
    let doublings = sends.saturating_sub(1).min(32);
    let full = r
        .initial_backoff_ms
        .saturating_mul(1 << doublings)
        .min(r.max_backoff_ms);
    let half = full / 2;
    half + jitter % (full - half + 1)
}

fn count(b: &Batch) -> u64 {
    b.spans.len() as u64
}

/// A span pushed into the buffer displaced these older ones.
pub fn displaced(n: u64) -> Tally {
    if n == 0 {
        return Vec::new();
    }
    vec![
        (Counter::SpansDropped, n),
        (Counter::SpansDroppedQueueFull, n),
    ]
}

/// Spans that ended after their root context began to go away.
pub fn too_late(n: u64) -> Tally {
    vec![
        (Counter::SpansDropped, n),
        (Counter::SpansDroppedShutdown, n),
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

    const MS: u64 = 1_000_000;

    fn collector(max_batch: usize, max_in_flight: usize) -> Collector {
        Collector {
            max_batch,
            max_in_flight,
            ..Collector::default()
        }
    }

    fn spans(n: u64) -> Vec<Span> {
        (0..n)
            .map(|i| {
                let mut s = crate::span::fixture();
                s.id = SpanId(i + 1);
                s
            })
            .collect()
    }

    fn buffer(n: u64) -> SpanBuffer {
        let mut b = SpanBuffer::new(100);
        for s in spans(n) {
            b.push(s);
        }
        b
    }

    fn batch(n: u64, sends: u64) -> Batch {
        Batch {
            spans: spans(n),
            sends,
        }
    }

    fn reply(answer: Answer, now_ms: u64) -> Reply {
        Reply {
            answer,
            retry_after_ms: None,
            now_ns: now_ms * MS,
            jitter: 0,
        }
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
        for (i, &(buffered, size, room, flying, full_only, want)) in rows.iter().enumerate() {
            let mut s = Scheduler::default();
            for t in 0..flying {
                s.sent(t, batch(1, 0));
            }
            let mut b = buffer(buffered);
            let got = s
                .next_batch(&mut b, &collector(size, room), full_only, 0)
                .map(|v| v.spans.len());
            assert_eq!(got, want, "row {i}");
        }
    }

    /// One row per rule: what each answer does with a batch of 4 on its `sends`-th send (of 3).
    #[test]
    fn every_answer_counts_its_spans_once() {
        // (answer, earlier sends, exported, dropped, queued again, gave up, reason counted)
        type Row = (Answer, u64, u64, u64, bool, bool, Option<Counter>);
        let no_response = Some(Counter::ExportFailedNoResponse);
        let status = Some(Counter::ExportFailedStatus);
        let rows: &[Row] = &[
            (Answer::Status(202), 0, 4, 0, false, false, None),
            (Answer::Status(200), 2, 4, 0, false, false, None),
            (Answer::Status(299), 0, 4, 0, false, false, None),
            (Answer::Status(300), 0, 0, 4, false, false, status), // not retried: redirect
            (Answer::Status(400), 0, 0, 4, false, false, status), // not retried: refused
            (Answer::Status(413), 0, 0, 4, false, false, status),
            (Answer::Status(429), 0, 0, 0, true, false, status), // retried: overloaded
            (Answer::Status(500), 0, 0, 0, true, false, status), // retried: 5xx
            (Answer::Status(503), 1, 0, 0, true, false, status),
            (Answer::Status(599), 0, 0, 0, true, false, status),
            (Answer::Status(503), 2, 0, 4, false, true, status), // third send failed: give up
            (Answer::NoResponse, 0, 0, 0, true, false, no_response), // reset, timeout, refused
            (Answer::NoResponse, 2, 0, 4, false, true, no_response),
            (Answer::Unreadable, 0, 0, 4, false, false, status), // not retried: garbled
        ];
        for (i, &(answer, sends, exported, dropped, again, gave_up, reason)) in
            rows.iter().enumerate()
        {
            let c = Collector::default();
            let mut s = Scheduler::default();
            let mut b = SpanBuffer::new(100);
            s.sent(7, batch(4, sends));
            let t = s.answered(7, reply(answer, 0), &mut b, &c);
            assert_eq!(get(&t, Counter::SpansExported), exported, "row {i}");
            assert_eq!(get(&t, Counter::SpansDropped), dropped, "row {i}");
            let failed_drop = get(&t, Counter::SpansDroppedExportFailed);
            assert_eq!(failed_drop, dropped, "row {i}");
            assert_eq!(b.len(), if again { 4 } else { 0 }, "row {i}");
            assert_eq!(get(&t, Counter::ExportRetries), u64::from(again), "row {i}");
            assert_eq!(
                get(&t, Counter::ExportGaveUp),
                u64::from(gave_up),
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
            let again = s.answered(7, reply(answer, 0), &mut b, &c);
            assert_eq!(get(&again, Counter::SpansExported), 0, "row {i}");
            assert_eq!(get(&again, Counter::SpansDropped), 0, "row {i}");
            assert_eq!(get(&again, Counter::InternalErrors), 1, "row {i}");
        }
    }

    #[test]
    fn max_attempts_one_never_retries() {
        let mut c = Collector::default();
        c.retry.max_attempts = 1;
        let (mut s, mut b) = (Scheduler::default(), SpanBuffer::new(10));
        s.sent(1, batch(2, 0));
        let t = s.answered(1, reply(Answer::Status(503), 0), &mut b, &c);
        assert_eq!((get(&t, Counter::SpansDropped), b.len()), (2, 0));
        assert_eq!(get(&t, Counter::ExportGaveUp), 1);
    }

    /// A retried batch goes when its backoff has passed, before newer spans, and only then.
    #[test]
    fn retry_waits_its_backoff_then_goes_first() {
        let mut c = collector(10, 2);
        c.flush_interval_ms = 60_000;
        let mut s = Scheduler::starting(0, &c);
        let mut b = buffer(0);
        s.sent(1, batch(3, 0));
        s.answered(1, reply(Answer::Status(500), 1000), &mut b, &c);
        b.push(crate::span::fixture());
        // initial_backoff_ms 500, jitter 0: the lower end of [250, 500].
        assert!(!s.flush_due(1249 * MS, &b, &c));
        assert!(s.next_batch(&mut b, &c, true, 1249 * MS).is_none());
        assert!(s.flush_due(1250 * MS, &b, &c), "due retry: a tick flushes");
        let first = s
            .next_batch(&mut b, &c, true, 1250 * MS)
            .map(|x| (x.spans.len(), x.sends));
        assert_eq!(first, Some((3, 1)), "the retry, even on a full-only flush");
        let next = s
            .next_batch(&mut b, &c, false, 1250 * MS)
            .map(|x| (x.spans.len(), x.sends));
        assert_eq!(next, Some((1, 0)), "then the new span");
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_into_the_upper_half() {
        let r = config::Retry {
            max_attempts: 5,
            initial_backoff_ms: 400,
            max_backoff_ms: 1000,
        };
        // (sends so far, jitter, wait)
        let rows: &[(u64, u64, u64)] = &[
            (1, 0, 200),
            (1, 200, 400),
            (1, 201, 200), // jitter wraps within the range
            (2, 0, 400),
            (2, 400, 800),
            (3, 0, 500), // 1600 capped at 1000
            (3, u64::MAX, 500 + u64::MAX % 501),
            (60, 7, 507), // no overflow however many sends
        ];
        for (i, &(sends, jitter, want)) in rows.iter().enumerate() {
            assert_eq!(backoff_ms(&r, sends, jitter), want, "row {i}");
        }
    }

    /// `Retry-After` holds every export back (capped at max_backoff_ms), and the retry with it.
    #[test]
    fn retry_after_holds_all_exports() {
        let mut c = collector(1, 4);
        c.retry.max_backoff_ms = 5000;
        let mut s = Scheduler::starting(0, &c);
        let mut b = buffer(3);
        s.sent(1, batch(1, 0));
        let mut r = reply(Answer::Status(429), 100);
        r.retry_after_ms = Some(2000);
        s.answered(1, r, &mut b, &c);
        assert!(s.next_batch(&mut b, &c, false, 2099 * MS).is_none(), "held");
        let got = s.next_batch(&mut b, &c, false, 2100 * MS).map(|x| x.sends);
        assert_eq!(got, Some(1), "the retry first, after the hold");
        s.sent(2, batch(1, 0));
        r.retry_after_ms = Some(3_600_000);
        s.answered(2, r, &mut b, &c);
        assert!(s.next_batch(&mut b, &c, false, 5099 * MS).is_none());
        assert!(
            s.next_batch(&mut b, &c, false, 5100 * MS).is_some(),
            "an hour cut to 5 s"
        );
    }

    #[test]
    fn retry_after_rows() {
        let rows: &[(&[u8], Option<u64>)] = &[
            (b"2", Some(2000)),
            (b" 120 ", Some(120_000)),
            (b"0", Some(0)),
            (b"", None),
            (b"-1", None),
            (b"1.5", None),
            (b"Wed, 21 Oct 2015 07:28:00 GMT", None), // HTTP-date: backoff alone
            (b"9999999999", None),                    // absurd
            (b"\xff", None),
        ];
        for (i, &(v, want)) in rows.iter().enumerate() {
            assert_eq!(parse_retry_after(v), want, "row {i}");
        }
        assert!(reads_retry_after(Answer::Status(429)));
        assert!(reads_retry_after(Answer::Status(503)));
        assert!(!reads_retry_after(Answer::Status(500)));
        assert!(!reads_retry_after(Answer::NoResponse));
    }

    /// Draining sends everything held at once, due or not, room in flight or not, and retries
    /// nothing.
    #[test]
    fn draining_sends_all_and_retries_nothing() {
        let c = collector(2, 1);
        let mut s = Scheduler::starting(0, &c);
        let mut b = buffer(3);
        s.sent(1, batch(2, 0));
        let mut r = reply(Answer::Status(503), 0);
        r.retry_after_ms = Some(10_000);
        s.answered(1, r, &mut b, &c);
        s.drain();
        let mut sizes = Vec::new();
        while let Some(x) = s.next_batch(&mut b, &c, true, 0) {
            sizes.push(x.spans.len());
            s.sent(sizes.len() as u32 + 10, x);
        }
        assert_eq!(sizes, [2, 2, 1], "the retry, then the rest, hold ignored");
        let t = s.answered(11, reply(Answer::NoResponse, 0), &mut b, &c);
        assert_eq!((get(&t, Counter::SpansDropped), b.len()), (2, 0));
    }

    #[test]
    fn refused_call_drops_its_batch() {
        let t = Scheduler::not_sent(&batch(9, 0));
        assert_eq!(get(&t, Counter::ExportRequestsFailed), 1);
        assert_eq!(get(&t, Counter::ExportFailedNotSent), 1);
        assert_eq!(get(&t, Counter::SpansDropped), 9);
    }

    #[test]
    fn reused_token_drops_the_earlier_batch() {
        let c = Collector::default();
        let mut s = Scheduler::default();
        assert!(s.sent(1, batch(3, 0)).is_empty());
        let t = s.sent(1, batch(5, 0));
        assert_eq!(get(&t, Counter::SpansDropped), 3);
        let t = s.answered(1, reply(Answer::Status(202), 0), &mut buffer(0), &c);
        assert_eq!(get(&t, Counter::SpansExported), 5);
    }

    #[test]
    fn shutdown_counts_buffered_retried_and_in_flight() {
        let c = Collector::default();
        let mut s = Scheduler::default();
        let mut b = buffer(6);
        s.sent(1, batch(3, 0));
        s.sent(2, batch(4, 0));
        s.sent(3, batch(5, 0));
        s.answered(3, reply(Answer::NoResponse, 0), &mut b, &c);
        let t = s.shut_down(&mut b);
        assert_eq!(get(&t, Counter::SpansDropped), 18);
        assert_eq!(get(&t, Counter::SpansDroppedShutdown), 18);
        assert!(b.is_empty());
        assert_eq!(s.in_flight(), 0);
        // An answer after shutdown was already counted as dropped.
        let late = s.answered(1, reply(Answer::Status(202), 0), &mut b, &c);
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
        let b = buffer(1);
        let mut sch = Scheduler::starting(5 * s, &c);
        let due: Vec<u64> = (6..=130).filter(|t| sch.flush_due(t * s, &b, &c)).collect();
        assert_eq!(due, [65, 125]);
        c.flush_interval_ms = 100;
        assert_eq!(tick_period_ms(&c), 100);
        let mut sch = Scheduler::starting(0, &c);
        assert!(!sch.flush_due(99_000_000, &b, &c));
        assert!(sch.flush_due(100_000_000, &b, &c));
        assert!(sch.flush_due(200_000_000, &b, &c));
        // A clock that always reads 0 is handled by the adapter (it flushes every tick).
        assert!(Scheduler::default().flush_due(0, &b, &c));
    }

    #[test]
    fn displaced_spans_are_queue_drops() {
        let t = displaced(2);
        assert_eq!(get(&t, Counter::SpansDropped), 2);
        assert_eq!(get(&t, Counter::SpansDroppedQueueFull), 2);
        assert!(displaced(0).is_empty());
    }
}
