//! B3 propagation (openzipkin/b3-propagation): the multi-header `x-b3-*` form and the single `b3` header.
//!
//! Where public implementations disagree, meshtrace chooses (README "B3 rules"):
//! - upper-case hex, ids of other lengths, all-zero ids: malformed;
//! - a sampling state without ids (`x-b3-sampled` alone, `b3: 1|0|d`): valid, starts a new trace with
//!   that decision;
//! - `b3` and `x-b3-*` both present: a valid `b3` wins; a malformed `b3` is counted and `x-b3-*` is tried;
//! - `true`/`false` are accepted in `x-b3-sampled` (legacy tracers send them), never in `b3`;
//! - a malformed sampling flag or parent id keeps the ids (the trace continues, the decision is made here);
//! - malformed ids drop the ids but keep a valid sampling flag: the sender's decision is still a decision.

use super::{Format, Formats, HeaderEdit, Outgoing};
use crate::ids::{SpanId, TraceId};

pub const TRACE_ID: &str = "x-b3-traceid";
pub const SPAN_ID: &str = "x-b3-spanid";
pub const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const SAMPLED: &str = "x-b3-sampled";
pub const FLAGS: &str = "x-b3-flags";
pub const SINGLE: &str = "b3";

/// The B3 header values of one request, first value of each, empty values treated as absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct B3Headers<'a> {
    pub single: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub parent_span_id: Option<&'a str>,
    pub sampled: Option<&'a str>,
    pub flags: Option<&'a str>,
    /// Which B3 headers the request carried at all, empty ones included: those must be removed or
    /// rewritten too, or an empty `x-b3-parentspanid` would travel upstream (istio#11696).
    present: u8,
}

/// What the incoming request carried, after validation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's trace and span: the new span's trace and parent.
    pub parent: Option<(TraceId, SpanId)>,
    /// The caller's sampling decision, if it sent one.
    pub sampled: Option<bool>,
    pub debug: bool,
    /// The first problem found, if any; the request is still served and traced.
    pub malformed: Option<Malformed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    SingleHeader,
    TraceId,
    SpanId,
    MissingSpanId,
    MissingTraceId,
    ParentSpanId,
    SampledFlag,
    DebugFlag,
    /// Not B3, but reported the same way: the W3C `traceparent` (see `w3c`).
    Traceparent,
}

impl Malformed {
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::SingleHeader => "b3",
            Malformed::TraceId => "x-b3-traceid",
            Malformed::SpanId => "x-b3-spanid",
            Malformed::MissingSpanId => "x-b3-spanid missing",
            Malformed::MissingTraceId => "x-b3-traceid missing",
            Malformed::ParentSpanId => "x-b3-parentspanid",
            Malformed::SampledFlag => "x-b3-sampled",
            Malformed::DebugFlag => "x-b3-flags",
            Malformed::Traceparent => "traceparent",
        }
    }
}

impl<'a> B3Headers<'a> {
    /// Records `value` if `name` (lower-case) is a B3 header; returns whether it was one. Only the first
    /// value of a repeated header counts, as in Envoy's tracer.
    pub fn observe(&mut self, name: &str, value: &'a str) -> bool {
        let Some(bit) = bit(name) else {
            return false;
        };
        self.present |= bit;
        let slot = match name {
            SINGLE => &mut self.single,
            TRACE_ID => &mut self.trace_id,
            SPAN_ID => &mut self.span_id,
            PARENT_SPAN_ID => &mut self.parent_span_id,
            SAMPLED => &mut self.sampled,
            _ => &mut self.flags,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value);
        }
        true
    }

    fn has(&self, name: &str) -> bool {
        bit(name).is_some_and(|b| self.present & b != 0)
    }

    fn any_multi(&self) -> bool {
        MULTI.iter().any(|name| self.has(name))
    }
}

const MULTI: [&str; 5] = [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS];

fn bit(name: &str) -> Option<u8> {
    match name {
        SINGLE => Some(1),
        TRACE_ID => Some(2),
        SPAN_ID => Some(4),
        PARENT_SPAN_ID => Some(8),
        SAMPLED => Some(16),
        FLAGS => Some(32),
        _ => None,
    }
}

/// Reads the incoming context from the enabled formats.
pub fn extract(headers: &B3Headers<'_>, formats: Formats) -> Extracted {
    let mut single_failed = false;
    if formats.contains(Format::B3Single) {
        if let Some(value) = headers.single {
            match parse_single(value) {
                Some(found) => return found,
                None => single_failed = true,
            }
        }
    }
    let mut found = if formats.contains(Format::B3Multi) {
        extract_multi(headers)
    } else {
        Extracted::default()
    };
    if single_failed {
        found.malformed = Some(Malformed::SingleHeader);
    }
    found
}

/// The caller's own parent span id (`x-b3-parentspanid`, or the fourth field of `b3`), from the same
/// header set `extract` took the context from: a SERVER span that shares the caller's span id
/// (Zipkin's shared spans) needs it as its parent.
pub fn caller_parent(headers: &B3Headers<'_>, formats: Formats) -> Option<SpanId> {
    if formats.contains(Format::B3Single) {
        if let Some(value) = headers.single {
            if parse_single(value).is_some_and(|e| e.parent.is_some()) {
                return value.split('-').nth(3).and_then(SpanId::parse);
            }
        }
    }
    if formats.contains(Format::B3Multi) {
        return headers.parent_span_id.and_then(SpanId::parse);
    }
    None
}

fn extract_multi(headers: &B3Headers<'_>) -> Extracted {
    let mut found = Extracted::default();
    let mut first: Option<Malformed> = None;
    let mut note = |m: Malformed| {
        first.get_or_insert(m);
    };
    match (headers.trace_id, headers.span_id) {
        (None, None) => {}
        (Some(t), Some(s)) => match (TraceId::parse(t), SpanId::parse(s)) {
            (Some(t), Some(s)) => found.parent = Some((t, s)),
            (None, _) => note(Malformed::TraceId),
            (_, None) => note(Malformed::SpanId),
        },
        (Some(_), None) => note(Malformed::MissingSpanId),
        (None, Some(_)) => note(Malformed::MissingTraceId),
    }
    if let Some(p) = headers.parent_span_id {
        if SpanId::parse(p).is_none() {
            note(Malformed::ParentSpanId);
        }
    }
    match headers.sampled {
        None => {}
        Some("1" | "true") => found.sampled = Some(true),
        Some("0" | "false") => found.sampled = Some(false),
        Some(_) => note(Malformed::SampledFlag),
    }
    match headers.flags {
        None | Some("0") => {}
        Some("1") => found.debug = true,
        Some(_) => note(Malformed::DebugFlag),
    }
    found.malformed = first;
    found
}

/// `{trace}-{span}[-{0|1|d}[-{parent}]]` or a lone `0`, `1`, `d`.
fn parse_single(value: &str) -> Option<Extracted> {
    let mut parts = value.split('-');
    let first = parts.next()?;
    let second = match parts.next() {
        None => {
            return parse_state(first).map(|(sampled, debug)| Extracted {
                sampled,
                debug,
                ..Extracted::default()
            })
        }
        Some(s) => s,
    };
    let trace_id = TraceId::parse(first)?;
    let span_id = SpanId::parse(second)?;
    let (sampled, debug) = match parts.next() {
        None => (None, false),
        Some(state) => parse_state(state)?,
    };
    if let Some(parent) = parts.next() {
        SpanId::parse(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Extracted {
        parent: Some((trace_id, span_id)),
        sampled,
        debug,
        malformed: None,
    })
}

fn parse_state(state: &str) -> Option<(Option<bool>, bool)> {
    match state {
        "1" => Some((Some(true), false)),
        "0" => Some((Some(false), false)),
        "d" => Some((Some(true), true)),
        _ => None,
    }
}

/// The header edits that write `out` in the configured formats and remove every B3 header of a format
/// not written, so a stale context never travels next to the new one.
pub fn inject(
    out: &Outgoing,
    formats: Formats,
    present: &B3Headers<'_>,
    edits: &mut Vec<HeaderEdit>,
) {
    if formats.contains(Format::B3Multi) {
        edits.push(HeaderEdit::set(TRACE_ID, out.trace_id.to_string()));
        edits.push(HeaderEdit::set(SPAN_ID, out.span_id.to_string()));
        match out.parent_id {
            Some(p) => edits.push(HeaderEdit::set(PARENT_SPAN_ID, p.to_string())),
            None if present.has(PARENT_SPAN_ID) => edits.push(HeaderEdit::remove(PARENT_SPAN_ID)),
            None => {}
        }
        // Debug also sends `x-b3-sampled: 1` although the spec allows omitting it: tracers that ignore
        // `x-b3-flags` (Envoy's own) would otherwise make their own decision and could drop the trace.
        let sampled = if out.sampled || out.debug { "1" } else { "0" };
        edits.push(HeaderEdit::set(SAMPLED, sampled.to_string()));
        if out.debug {
            edits.push(HeaderEdit::set(FLAGS, "1".to_string()));
        } else if present.has(FLAGS) {
            edits.push(HeaderEdit::remove(FLAGS));
        }
    } else if present.any_multi() {
        for name in MULTI.iter().filter(|name| present.has(name)) {
            edits.push(HeaderEdit::remove(name));
        }
    }
    if formats.contains(Format::B3Single) {
        let state = if out.debug {
            "d"
        } else if out.sampled {
            "1"
        } else {
            "0"
        };
        let mut value = format!("{}-{}-{}", out.trace_id, out.span_id, state);
        if let Some(p) = out.parent_id {
            value.push('-');
            value.push_str(&p.to_string());
        }
        edits.push(HeaderEdit::set(SINGLE, value));
    } else if present.has(SINGLE) {
        edits.push(HeaderEdit::remove(SINGLE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T128: &str = "463ac35c9f6413ad48485a3953bb6124";
    const T64: &str = "a3ce929d0e0e4736";
    const S: &str = "e457b5a2e4d86bd1";
    const P: &str = "05e3ac9a4f6e3b90";

    fn both() -> Formats {
        Formats::of(&[Format::B3Multi, Format::B3Single])
    }

    fn ids(t: &str, s: &str) -> Option<(TraceId, SpanId)> {
        Some((TraceId::parse(t)?, SpanId::parse(s)?))
    }

    fn ok(parent: Option<(TraceId, SpanId)>, sampled: Option<bool>, debug: bool) -> Extracted {
        Extracted {
            parent,
            sampled,
            debug,
            malformed: None,
        }
    }

    fn bad(parent: Option<(TraceId, SpanId)>, sampled: Option<bool>, m: Malformed) -> Extracted {
        Extracted {
            parent,
            sampled,
            debug: false,
            malformed: Some(m),
        }
    }

    fn headers<'a>(pairs: &[(&str, &'a str)]) -> B3Headers<'a> {
        let mut h = B3Headers::default();
        for (n, v) in pairs {
            h.observe(n, v);
        }
        h
    }

    #[test]
    fn extract_rows() {
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, Extracted);
        let rows: Vec<Row> = vec![
            ("nothing", vec![], ok(None, None, false)),
            // multi
            (
                "multi 128 deferred",
                vec![(TRACE_ID, T128), (SPAN_ID, S)],
                ok(ids(T128, S), None, false),
            ),
            (
                "multi 64 sampled",
                vec![(TRACE_ID, T64), (SPAN_ID, S), (SAMPLED, "1")],
                ok(ids(T64, S), Some(true), false),
            ),
            (
                "multi with parent not sampled",
                vec![
                    (TRACE_ID, T128),
                    (SPAN_ID, S),
                    (PARENT_SPAN_ID, P),
                    (SAMPLED, "0"),
                ],
                ok(ids(T128, S), Some(false), false),
            ),
            (
                "multi true",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (SAMPLED, "true")],
                ok(ids(T128, S), Some(true), false),
            ),
            (
                "multi false",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (SAMPLED, "false")],
                ok(ids(T128, S), Some(false), false),
            ),
            (
                "multi debug",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (FLAGS, "1")],
                ok(ids(T128, S), None, true),
            ),
            (
                "flags 0 ignored",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (FLAGS, "0")],
                ok(ids(T128, S), None, false),
            ),
            (
                "sampled alone",
                vec![(SAMPLED, "1")],
                ok(None, Some(true), false),
            ),
            (
                "not sampled alone",
                vec![(SAMPLED, "0")],
                ok(None, Some(false), false),
            ),
            ("debug alone", vec![(FLAGS, "1")], ok(None, None, true)),
            (
                "empty values are absent",
                vec![(TRACE_ID, ""), (SPAN_ID, ""), (PARENT_SPAN_ID, "")],
                ok(None, None, false),
            ),
            // single
            (
                "single ids",
                vec![(SINGLE, "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1")],
                ok(ids(T128, S), None, false),
            ),
            (
                "single 64",
                vec![(SINGLE, "a3ce929d0e0e4736-e457b5a2e4d86bd1-1")],
                ok(ids(T64, S), Some(true), false),
            ),
            (
                "single not sampled",
                vec![(
                    SINGLE,
                    "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-0",
                )],
                ok(ids(T128, S), Some(false), false),
            ),
            (
                "single debug",
                vec![(
                    SINGLE,
                    "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-d",
                )],
                ok(ids(T128, S), Some(true), true),
            ),
            (
                "single with parent",
                vec![(
                    SINGLE,
                    "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
                )],
                ok(ids(T128, S), Some(true), false),
            ),
            (
                "single lone 0",
                vec![(SINGLE, "0")],
                ok(None, Some(false), false),
            ),
            (
                "single lone 1",
                vec![(SINGLE, "1")],
                ok(None, Some(true), false),
            ),
            (
                "single lone d",
                vec![(SINGLE, "d")],
                ok(None, Some(true), true),
            ),
            (
                "single wins over multi",
                vec![
                    (SINGLE, "a3ce929d0e0e4736-e457b5a2e4d86bd1-0"),
                    (TRACE_ID, T128),
                    (SPAN_ID, P),
                    (SAMPLED, "1"),
                ],
                ok(ids(T64, S), Some(false), false),
            ),
        ];
        for (name, pairs, want) in rows {
            assert_eq!(extract(&headers(&pairs), both()), want, "row {name}");
        }
    }

    #[test]
    fn malformed_rows() {
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, Extracted);
        let rows: Vec<Row> = vec![
            (
                "upper-case trace id",
                vec![(TRACE_ID, "463AC35C9F6413AD48485A3953BB6124"), (SPAN_ID, S)],
                bad(None, None, Malformed::TraceId),
            ),
            (
                "trace id 20 chars",
                vec![(TRACE_ID, "463ac35c9f6413ad4848"), (SPAN_ID, S)],
                bad(None, None, Malformed::TraceId),
            ),
            (
                "all-zero trace id",
                vec![(TRACE_ID, "00000000000000000000000000000000"), (SPAN_ID, S)],
                bad(None, None, Malformed::TraceId),
            ),
            (
                "all-zero span id",
                vec![(TRACE_ID, T128), (SPAN_ID, "0000000000000000")],
                bad(None, None, Malformed::SpanId),
            ),
            (
                "span id 32 chars",
                vec![(TRACE_ID, T128), (SPAN_ID, T128)],
                bad(None, None, Malformed::SpanId),
            ),
            (
                "non-hex span id",
                vec![(TRACE_ID, T128), (SPAN_ID, "e457b5a2e4d86bdz")],
                bad(None, None, Malformed::SpanId),
            ),
            (
                "trace id without span id",
                vec![(TRACE_ID, T128), (SAMPLED, "1")],
                bad(None, Some(true), Malformed::MissingSpanId),
            ),
            (
                "span id without trace id",
                vec![(SPAN_ID, S)],
                bad(None, None, Malformed::MissingTraceId),
            ),
            (
                "bad parent keeps trace",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (PARENT_SPAN_ID, "xyz")],
                bad(ids(T128, S), None, Malformed::ParentSpanId),
            ),
            (
                "bad sampled keeps trace",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (SAMPLED, "yes")],
                bad(ids(T128, S), None, Malformed::SampledFlag),
            ),
            (
                "upper-case True",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (SAMPLED, "True")],
                bad(ids(T128, S), None, Malformed::SampledFlag),
            ),
            (
                "bad flags keeps trace",
                vec![(TRACE_ID, T128), (SPAN_ID, S), (FLAGS, "2")],
                bad(ids(T128, S), None, Malformed::DebugFlag),
            ),
            (
                "bad single alone",
                vec![(SINGLE, "garbage")],
                bad(None, None, Malformed::SingleHeader),
            ),
            (
                "single with true",
                vec![(
                    SINGLE,
                    "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-true",
                )],
                bad(None, None, Malformed::SingleHeader),
            ),
            (
                "single upper",
                vec![(
                    SINGLE,
                    "463AC35C9F6413AD48485A3953BB6124-E457B5A2E4D86BD1-1",
                )],
                bad(None, None, Malformed::SingleHeader),
            ),
            (
                "single too many parts",
                vec![(
                    SINGLE,
                    "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
                )],
                bad(None, None, Malformed::SingleHeader),
            ),
            (
                "single parent without state",
                vec![(
                    SINGLE,
                    "463ac35c9f6413ad48485a3953bb6124-e457b5a2e4d86bd1-05e3ac9a4f6e3b90",
                )],
                bad(None, None, Malformed::SingleHeader),
            ),
            (
                "single trailing dash",
                vec![(SINGLE, "463ac35c9f6413ad48485a3953bb6124-")],
                bad(None, None, Malformed::SingleHeader),
            ),
            (
                "bad single falls back to multi",
                vec![
                    (SINGLE, "nope"),
                    (TRACE_ID, T128),
                    (SPAN_ID, S),
                    (SAMPLED, "1"),
                ],
                bad(ids(T128, S), Some(true), Malformed::SingleHeader),
            ),
        ];
        for (name, pairs, want) in rows {
            assert_eq!(extract(&headers(&pairs), both()), want, "row {name}");
        }
    }

    #[test]
    fn disabled_formats_are_not_read() {
        let h = headers(&[(SINGLE, "1"), (SAMPLED, "0")]);
        assert_eq!(
            extract(&h, Formats::of(&[Format::B3Multi])).sampled,
            Some(false)
        );
        assert_eq!(
            extract(&h, Formats::of(&[Format::B3Single])).sampled,
            Some(true)
        );
        assert_eq!(extract(&h, Formats::of(&[])), Extracted::default());
    }

    fn outgoing(parent: bool, sampled: bool, debug: bool) -> Outgoing {
        Outgoing {
            trace_id: TraceId::parse(T128).unwrap_or(TraceId::generate(1, 1)),
            span_id: SpanId(0x1111_2222_3333_4444),
            parent_id: parent.then_some(SpanId(0x05e3_ac9a_4f6e_3b90)),
            sampled,
            debug,
        }
    }

    fn render(edits: &[HeaderEdit]) -> Vec<String> {
        edits
            .iter()
            .map(|e| match &e.value {
                Some(v) => format!("{}={}", e.name, v),
                None => format!("-{}", e.name),
            })
            .collect()
    }

    #[test]
    fn inject_rows() {
        type Row<'a> = (
            &'a str,
            Outgoing,
            Formats,
            Vec<(&'a str, &'a str)>,
            Vec<&'a str>,
        );
        let multi = Formats::of(&[Format::B3Multi]);
        let single = Formats::of(&[Format::B3Single]);
        let rows: Vec<Row> = vec![
            (
                "root multi",
                outgoing(false, true, false),
                multi,
                vec![],
                vec![
                    "x-b3-traceid=463ac35c9f6413ad48485a3953bb6124",
                    "x-b3-spanid=1111222233334444",
                    "x-b3-sampled=1",
                ],
            ),
            (
                "child multi removes stale b3 and flags",
                outgoing(true, false, false),
                multi,
                vec![(SINGLE, "stale"), (FLAGS, "0")],
                vec![
                    "x-b3-traceid=463ac35c9f6413ad48485a3953bb6124",
                    "x-b3-spanid=1111222233334444",
                    "x-b3-parentspanid=05e3ac9a4f6e3b90",
                    "x-b3-sampled=0",
                    "-x-b3-flags",
                    "-b3",
                ],
            ),
            (
                "root removes stale parent",
                outgoing(false, true, false),
                multi,
                vec![(PARENT_SPAN_ID, P)],
                vec![
                    "x-b3-traceid=463ac35c9f6413ad48485a3953bb6124",
                    "x-b3-spanid=1111222233334444",
                    "-x-b3-parentspanid",
                    "x-b3-sampled=1",
                ],
            ),
            (
                "debug multi",
                outgoing(true, true, true),
                multi,
                vec![],
                vec![
                    "x-b3-traceid=463ac35c9f6413ad48485a3953bb6124",
                    "x-b3-spanid=1111222233334444",
                    "x-b3-parentspanid=05e3ac9a4f6e3b90",
                    "x-b3-sampled=1",
                    "x-b3-flags=1",
                ],
            ),
            (
                "single only removes multi",
                outgoing(true, true, false),
                single,
                vec![(TRACE_ID, T128), (SAMPLED, "1")],
                vec![
                    "-x-b3-traceid",
                    "-x-b3-sampled",
                    "b3=463ac35c9f6413ad48485a3953bb6124-1111222233334444-1-05e3ac9a4f6e3b90",
                ],
            ),
            (
                "empty headers are removed, not forwarded",
                outgoing(false, true, false),
                multi,
                vec![(PARENT_SPAN_ID, ""), (FLAGS, ""), (SINGLE, "")],
                vec![
                    "x-b3-traceid=463ac35c9f6413ad48485a3953bb6124",
                    "x-b3-spanid=1111222233334444",
                    "-x-b3-parentspanid",
                    "x-b3-sampled=1",
                    "-x-b3-flags",
                    "-b3",
                ],
            ),
            (
                "single debug root",
                outgoing(false, true, true),
                single,
                vec![],
                vec!["b3=463ac35c9f6413ad48485a3953bb6124-1111222233334444-d"],
            ),
        ];
        for (name, out, formats, present, want) in rows {
            let mut edits = Vec::new();
            inject(&out, formats, &headers(&present), &mut edits);
            assert_eq!(render(&edits), want, "row {name}");
        }
    }

    #[test]
    fn injected_single_round_trips() {
        let mut edits = Vec::new();
        inject(
            &outgoing(true, false, false),
            Formats::of(&[Format::B3Single]),
            &B3Headers::default(),
            &mut edits,
        );
        let value = edits[0].value.clone().unwrap_or_default();
        let back = extract(&headers(&[(SINGLE, &value)]), both());
        assert_eq!(
            back.parent.map(|p| p.1),
            Some(SpanId(0x1111_2222_3333_4444))
        );
        assert_eq!(back.sampled, Some(false));
    }

    /// Random header soup: extraction never panics, and whatever it accepts re-encodes to valid ids.
    #[test]
    fn arbitrary_inputs_are_handled() {
        let alphabet: Vec<char> = "0123456789abcdefABCDEF-dxz é".chars().collect();
        let names = [SINGLE, TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..20_000 {
            let mut values: Vec<(&str, String)> = Vec::new();
            for name in names {
                if next(2) == 0 {
                    let len = [0, 1, 15, 16, 17, 32, 33, 50][next(8) as usize];
                    let v: String = (0..len)
                        .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                        .collect();
                    values.push((name, v));
                }
            }
            let pairs: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let got = extract(&headers(&pairs), both());
            if let Some((t, s)) = got.parent {
                assert!(TraceId::parse(&t.to_string()).is_some());
                assert!(SpanId::parse(&s.to_string()).is_some());
            }
        }
    }
}
