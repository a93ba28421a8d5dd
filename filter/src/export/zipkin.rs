//! Zipkin v2 JSON (`POST /api/v2/spans`), the format Envoy's Zipkin tracer sends and Jaeger's Zipkin
//! receiver accepts.

use std::fmt::Write;

use crate::span::Span;

pub const CONTENT_TYPE: &str = "application/json";

/// Encodes a batch as a Zipkin v2 JSON array.
pub fn encode(spans: &[Span]) -> String {
    let mut out = String::with_capacity(spans.len() * 640);
    out.push('[');
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_span(span, &mut out);
    }
    out.push(']');
    out
}

fn encode_span(span: &Span, out: &mut String) {
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"id\":\"{}\"",
        span.trace_id, span.id
    );
    if let Some(parent) = span.parent_id {
        let _ = write!(out, ",\"parentId\":\"{parent}\"");
    }
    let _ = write!(out, ",\"kind\":\"{}\",\"name\":", span.kind.as_zipkin());
    string(&span.name, out);
    let _ = write!(
        out,
        ",\"timestamp\":{},\"duration\":{}",
        span.timestamp_us,
        span.duration_us.max(1)
    );
    out.push_str(",\"localEndpoint\":{\"serviceName\":");
    string(&span.service_name, out);
    out.push('}');
    if let Some(remote) = span.remote {
        let family = if remote.is_ipv4() { "ipv4" } else { "ipv6" };
        let _ = write!(
            out,
            ",\"remoteEndpoint\":{{\"{family}\":\"{}\",\"port\":{}}}",
            remote.ip(),
            remote.port()
        );
    }
    if span.debug {
        out.push_str(",\"debug\":true");
    }
    out.push_str(",\"tags\":{");
    for (i, (key, value)) in span.tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(key, out);
        out.push(':');
        string(value, out);
    }
    out.push_str("}}");
}

fn string(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SpanId, TraceId};
    use crate::span::Kind;
    use std::borrow::Cow;

    fn span() -> Span {
        Span {
            trace_id: TraceId::parse("463ac35c9f6413ad48485a3953bb6124")
                .unwrap_or(TraceId::generate(1, 1)),
            id: SpanId(0xe457_b5a2_e4d8_6bd1),
            parent_id: Some(SpanId(0x05e3_ac9a_4f6e_3b90)),
            kind: Kind::Server,
            name: "example.com/hello".into(),
            service_name: "gateway".into(),
            timestamp_us: 1_700_000_000_000_000,
            duration_us: 1234,
            debug: false,
            remote: "10.1.2.3:51000".parse().ok(),
            tags: vec![
                (Cow::Borrowed("http.method"), "GET".into()),
                (Cow::Borrowed("user_agent"), "curl \"quoted\"\n\u{1}".into()),
            ],
        }
    }

    #[test]
    fn golden_span() {
        let want = concat!(
            r#"[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"e457b5a2e4d86bd1","parentId":"05e3ac9a4f6e3b90","#,
            r#""kind":"SERVER","name":"example.com/hello","timestamp":1700000000000000,"duration":1234,"#,
            r#""localEndpoint":{"serviceName":"gateway"},"remoteEndpoint":{"ipv4":"10.1.2.3","port":51000},"#,
            r#""tags":{"http.method":"GET","user_agent":"curl \"quoted\"\n\u0001"}}]"#
        );
        assert_eq!(encode(&[span()]), want);
    }

    #[test]
    fn root_debug_ipv6_zero_duration() {
        let s = Span {
            parent_id: None,
            debug: true,
            duration_us: 0,
            remote: "[::1]:80".parse().ok(),
            tags: vec![],
            ..span()
        };
        let json: serde_json::Value =
            serde_json::from_str(&encode(&[s.clone(), s])).unwrap_or_default();
        let first = &json[0];
        assert!(first.get("parentId").is_none());
        assert_eq!(first["debug"], true);
        assert_eq!(first["duration"], 1);
        assert_eq!(first["remoteEndpoint"]["ipv6"], "::1");
        assert_eq!(json.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn empty_batch() {
        assert_eq!(encode(&[]), "[]");
    }
}
