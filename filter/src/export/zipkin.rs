//! Zipkin v2 JSON (`POST /api/v2/spans`), the format Envoy's Zipkin tracer sends and Jaeger's Zipkin
//! receiver accepts.

use std::fmt::Write;

use crate::span::{self, tag, Span};

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
        span.timestamp_us(),
        span.duration_us().max(1)
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
    if span.shared {
        out.push_str(",\"shared\":true");
    }
    out.push_str(",\"tags\":{");
    let mut tags = Tags { out, first: true };
    encode_tags(span, &mut tags);
    out.push_str("}}");
}

/// Envoy's Zipkin tag names, so dashboards built on Envoy's tracer read meshtrace spans unchanged.
fn encode_tags(span: &Span, t: &mut Tags<'_>) {
    let h = &span.http;
    t.add(tag::NODE_ID, &span.node_id);
    t.add(tag::COMPONENT, "proxy");
    t.add(tag::HTTP_URL, &h.url);
    t.add(tag::HTTP_METHOD, &h.method);
    if let Some(ua) = &h.user_agent {
        t.add(tag::USER_AGENT, ua);
    }
    if let Some(id) = &h.request_id {
        t.add(tag::REQUEST_ID, id);
    }
    for e in &span.extra {
        t.add(&e.key, &e.value);
    }
    if let Some(p) = &h.protocol {
        t.add(tag::HTTP_PROTOCOL, p);
    }
    t.add(tag::HTTP_STATUS_CODE, &h.status.to_string());
    if span.error {
        t.add(tag::ERROR, "true");
    }
    if let Some(g) = h.grpc_status {
        t.add(tag::GRPC_STATUS, &g.to_string());
    }
    t.add(tag::RESPONSE_FLAGS, &span::response_flags(h.response_flags));
    t.add(tag::REQUEST_SIZE, &h.request_size.unwrap_or(0).to_string());
    t.add(
        tag::RESPONSE_SIZE,
        &h.response_size.unwrap_or(0).to_string(),
    );
    if let Some(peer) = &h.peer {
        t.add(tag::PEER_ADDRESS, peer);
    }
    if let Some(c) = &h.upstream_cluster {
        t.add(tag::UPSTREAM_CLUSTER, c);
    }
    if let Some(a) = &h.upstream_address {
        t.add(tag::UPSTREAM_ADDRESS, a);
    }
}

struct Tags<'a> {
    out: &'a mut String,
    first: bool,
}

impl Tags<'_> {
    fn add(&mut self, key: &str, value: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(key, self.out);
        self.out.push(':');
        string(value, self.out);
    }
}

/// A JSON string literal; shared with the OTLP encoder.
pub(crate) fn string(value: &str, out: &mut String) {
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
    use crate::span::fixture;

    #[test]
    fn golden_span() {
        let want = concat!(
            r#"[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"e457b5a2e4d86bd1","parentId":"05e3ac9a4f6e3b90","#,
            r#""kind":"SERVER","name":"example.com/hello","timestamp":1700000000000000,"duration":1234,"#,
            r#""localEndpoint":{"serviceName":"gateway"},"remoteEndpoint":{"ipv4":"10.1.2.3","port":51000},"#,
            r#""tags":{"node_id":"router~10.1.0.1~gw","component":"proxy","http.url":"http://example.com/hello?<redacted>","#,
            r#""http.method":"GET","user_agent":"curl \"quoted\"\n\u0001","guid:x-request-id":"r-1","#,
            r#""sampling.reason":"rate","x-tenant":"acme","http.protocol":"HTTP/1.1","http.status_code":"503","#,
            r#""error":"true","response_flags":"UF","request_size":"0","response_size":"91","#,
            r#""peer.address":"10.1.2.3","upstream_cluster":"app"}}]"#
        );
        assert_eq!(encode(&[fixture()]), want);
    }

    #[test]
    fn root_debug_shared_ipv6_zero_duration() {
        let mut s = fixture();
        s.parent_id = None;
        s.debug = true;
        s.shared = true;
        s.duration_ns = 0;
        s.remote = "[::1]:80".parse().ok();
        let json: serde_json::Value =
            serde_json::from_str(&encode(&[s.clone(), s])).unwrap_or_default();
        let first = &json[0];
        assert!(first.get("parentId").is_none());
        assert_eq!(first["debug"], true);
        assert_eq!(first["shared"], true);
        assert_eq!(first["duration"], 1);
        assert_eq!(first["remoteEndpoint"]["ipv6"], "::1");
        assert_eq!(json.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn empty_batch() {
        assert_eq!(encode(&[]), "[]");
    }
}
