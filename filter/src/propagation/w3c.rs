//! W3C Trace Context (`traceparent`, `tracestate`): the format OpenTelemetry apps and Envoy's
//! OpenTelemetry tracer speak, read and written so B3 proxies and OTel apps share one trace.
//!
//! Choices (README "W3C Trace Context"):
//! - `traceparent` is `{version}-{trace-id 32}-{parent-id 16}-{flags 2}`, lower-case hex only; version
//!   `ff`, all-zero ids, upper case or a wrong length is malformed. A version above `00` is read by its
//!   first four fields when what follows is `-…`, as the spec asks of forward-compatible readers.
//! - The sampled flag (bit 0) is the caller's decision either way: W3C has no "deferred" state.
//! - A trace id whose high half is zero is read as the 64-bit id it was padded from, so a B3 hop that
//!   started a 64-bit trace gets the same 16-character id back.
//! - `tracestate` is never changed: it belongs to the vendors that wrote it.

use super::HeaderEdit;
use crate::ids::{SpanId, TraceId};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// What a valid `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Parses one `traceparent` value; None when malformed.
pub fn parse(value: &str) -> Option<Parent> {
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = value.get(..2)?;
    match version {
        "00" if bytes.len() != 55 => return None,
        "ff" => return None,
        _ if !is_lower_hex(version) => return None,
        _ => {}
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace = value.get(3..35)?;
    let span = value.get(36..52)?;
    let flags = value.get(53..55)?;
    let mut trace_id = TraceId::parse(trace)?;
    if trace_id.high == 0 {
        trace_id.wide = false;
    }
    let span_id = SpanId::parse(span)?;
    if !is_lower_hex(flags) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// `traceparent` for the context this hop sends upstream (version 00; 64-bit ids are zero-padded).
pub fn format(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!(
        "00-{:016x}{:016x}-{}-{}",
        trace_id.high,
        trace_id.low,
        span_id,
        if sampled { "01" } else { "00" }
    )
}

/// Writes `traceparent`; `tracestate` is left as it came.
pub fn inject(trace_id: TraceId, span_id: SpanId, sampled: bool, edits: &mut Vec<HeaderEdit>) {
    edits.push(HeaderEdit::set(
        TRACEPARENT,
        format(trace_id, span_id, sampled),
    ));
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn ok(trace: &str, sampled: bool) -> Option<Parent> {
        let mut trace_id = TraceId::parse(trace)?;
        if trace_id.high == 0 {
            trace_id.wide = false;
        }
        Some(Parent {
            trace_id,
            span_id: SpanId::parse(SPAN)?,
            sampled,
        })
    }

    #[test]
    fn parse_rows() {
        let valid: Vec<(&str, String, Option<Parent>)> = vec![
            ("sampled", format!("00-{TRACE}-{SPAN}-01"), ok(TRACE, true)),
            (
                "not sampled",
                format!("00-{TRACE}-{SPAN}-00"),
                ok(TRACE, false),
            ),
            (
                "other flag bits ignored",
                format!("00-{TRACE}-{SPAN}-03"),
                ok(TRACE, true),
            ),
            (
                "future version with more fields",
                format!("cc-{TRACE}-{SPAN}-01-what-the-future-holds"),
                ok(TRACE, true),
            ),
            (
                "future version, exact length",
                format!("01-{TRACE}-{SPAN}-00"),
                ok(TRACE, false),
            ),
            (
                "padded 64-bit id reads as 64-bit",
                format!("00-0000000000000000a3ce929d0e0e4736-{SPAN}-01"),
                ok("0000000000000000a3ce929d0e0e4736", true),
            ),
        ];
        for (name, value, want) in valid {
            assert!(want.is_some(), "row {name}: bad fixture");
            assert_eq!(parse(&value), want, "row {name}");
        }
        let invalid: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("version ff", format!("ff-{TRACE}-{SPAN}-01")),
            ("version 00 with extra", format!("00-{TRACE}-{SPAN}-01-x")),
            ("future version glued", format!("cc-{TRACE}-{SPAN}-01x")),
            (
                "upper-case trace",
                format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            ),
            ("upper-case version", format!("0A-{TRACE}-{SPAN}-01")),
            ("upper-case flags", format!("00-{TRACE}-{SPAN}-0A")),
            ("zero trace", format!("00-{}-{SPAN}-01", "0".repeat(32))),
            ("zero span", format!("00-{TRACE}-{}-01", "0".repeat(16))),
            ("short trace", format!("00-{}-{SPAN}-01", &TRACE[..30])),
            ("64-bit trace", format!("00-{}-{SPAN}-01", &TRACE[16..])),
            ("wrong separator", format!("00_{TRACE}-{SPAN}-01")),
            ("non-hex flags", format!("00-{TRACE}-{SPAN}-zz")),
            ("b3 single in traceparent", format!("{TRACE}-{SPAN}-1")),
            ("multi-byte", format!("00-{TRACE}-{SPAN}-0é")),
        ];
        for (name, value) in invalid {
            assert_eq!(parse(&value), None, "row {name}");
        }
    }

    #[test]
    fn format_rows() {
        let t128 = TraceId::parse(TRACE);
        let t64 = TraceId::parse("a3ce929d0e0e4736");
        let span = SpanId::parse(SPAN);
        let (Some(t128), Some(t64), Some(span)) = (t128, t64, span) else {
            unreachable!("fixtures are valid")
        };
        assert_eq!(format(t128, span, true), format!("00-{TRACE}-{SPAN}-01"));
        assert_eq!(
            format(t64, span, false),
            format!("00-0000000000000000a3ce929d0e0e4736-{SPAN}-00")
        );
        // What we write, we read back as the same context (64-bit ids stay 64-bit).
        for (t, sampled) in [(t128, true), (t64, false)] {
            assert_eq!(
                parse(&format(t, span, sampled)),
                Some(Parent {
                    trace_id: t,
                    span_id: span,
                    sampled
                })
            );
        }
    }
}
