//! OTLP/HTTP JSON (`POST /v1/traces`), for OpenTelemetry collectors and Jaeger's OTLP receiver.
//!
//! The same span model as Zipkin, named the OpenTelemetry way: semantic-convention attributes
//! (`http.request.method`, `url.path`, `http.response.status_code`, …), `service.name` on the
//! resource, hex ids (OTLP's JSON mapping), nanosecond times as strings (int64 in proto3 JSON).

use std::fmt::Write;

use super::zipkin::string;
use crate::span::{self, Kind, Span};

pub const CONTENT_TYPE: &str = "application/json";

/// OTLP `SpanKind` values.
const KIND_SERVER: u8 = 2;
const KIND_CLIENT: u8 = 3;
/// OTLP `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u8 = 2;

/// Encodes a batch as one `ExportTraceServiceRequest`, one resource per service name.
pub fn encode(spans: &[Span]) -> String {
    let mut out = String::with_capacity(spans.len() * 900 + 64);
    out.push_str("{\"resourceSpans\":[");
    let mut services: Vec<(&str, &str)> = Vec::new();
    for s in spans {
        if !services.iter().any(|(name, _)| *name == s.service_name) {
            services.push((&s.service_name, &s.node_id));
        }
    }
    for (i, (service, node_id)) in services.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"resource\":{\"attributes\":[");
        let mut attrs = Attributes {
            out: &mut out,
            first: true,
        };
        attrs.string("service.name", service);
        if !node_id.is_empty() {
            attrs.string("service.instance.id", node_id);
        }
        let _ = write!(
            out,
            "]}},\"scopeSpans\":[{{\"scope\":{{\"name\":\"meshtrace\",\"version\":\"{}\"}},\"spans\":[",
            env!("CARGO_PKG_VERSION")
        );
        let mut first = true;
        for s in spans.iter().filter(|s| s.service_name == *service) {
            if !first {
                out.push(',');
            }
            first = false;
            encode_span(s, &mut out);
        }
        out.push_str("]}]}");
    }
    out.push_str("]}");
    out
}

fn encode_span(span: &Span, out: &mut String) {
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "{{\"traceId\":\"{:016x}{:016x}\",\"spanId\":\"{}\"",
        span.trace_id.high, span.trace_id.low, span.id
    );
    if let Some(parent) = span.parent_id {
        let _ = write!(out, ",\"parentSpanId\":\"{parent}\"");
    }
    out.push_str(",\"name\":");
    string(&span.name, out);
    let kind = match span.kind {
        Kind::Server => KIND_SERVER,
        Kind::Client => KIND_CLIENT,
    };
    let _ = write!(
        out,
        ",\"kind\":{kind},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        span.start_ns,
        span.start_ns.saturating_add(span.duration_ns)
    );
    let mut attrs = Attributes { out, first: true };
    encode_attributes(span, &mut attrs);
    out.push(']');
    if span.error {
        let _ = write!(out, ",\"status\":{{\"code\":{STATUS_ERROR}}}");
    }
    out.push('}');
}

fn encode_attributes(span: &Span, a: &mut Attributes<'_>) {
    let h = &span.http;
    a.string("http.request.method", &h.method);
    a.string("url.scheme", &h.scheme);
    let (path, query) = match h.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (h.target.as_str(), None),
    };
    a.string("url.path", path);
    if let Some(q) = query {
        a.string("url.query", q);
    }
    if span.kind == Kind::Client {
        a.string("url.full", &h.url);
    }
    let (host, port) = split_authority(&h.authority);
    if !host.is_empty() {
        a.string("server.address", host);
    }
    if let Some(p) = port {
        a.int("server.port", p);
    }
    if let Some(remote) = span.remote {
        a.string("network.peer.address", &remote.ip().to_string());
        a.int("network.peer.port", u64::from(remote.port()));
    }
    if let Some(ua) = &h.user_agent {
        a.string("user_agent.original", ua);
    }
    if let Some(p) = &h.protocol {
        let (name, version) = p.split_once('/').unwrap_or((p.as_str(), ""));
        a.string("network.protocol.name", &name.to_ascii_lowercase());
        if !version.is_empty() {
            a.string("network.protocol.version", version);
        }
    }
    if h.status != 0 {
        a.int("http.response.status_code", h.status);
    }
    if let Some(g) = h.grpc_status {
        a.int("rpc.grpc.status_code", g);
    }
    if span.error {
        a.string("error.type", &error_type(span));
    }
    if let Some(n) = h.request_size {
        a.int("http.request.body.size", n);
    }
    if let Some(n) = h.response_size {
        a.int("http.response.body.size", n);
    }
    if let Some(id) = &h.request_id {
        a.strings("http.request.header.x-request-id", id);
    }
    if h.response_flags != 0 {
        a.string(
            "envoy.response_flags",
            &span::response_flags(h.response_flags),
        );
    }
    if let Some(c) = &h.upstream_cluster {
        a.string("envoy.upstream_cluster", c);
    }
    if let Some(u) = &h.upstream_address {
        a.string("envoy.upstream_address", u);
    }
    if span.debug {
        a.boolean("meshtrace.debug", true);
    }
    for e in &span.extra {
        if e.header {
            // Semantic conventions: `http.request.header.<name>`, a list of values.
            a.strings(&format!("http.request.header.{}", e.key), &e.value);
        } else {
            a.string(&e.key, &e.value);
        }
    }
}

/// `error.type` as the semantic conventions ask: the status code for HTTP errors, else what Envoy
/// says went wrong (response flags), else `_OTHER`.
fn error_type(span: &Span) -> String {
    let h = &span.http;
    if h.status >= 500 {
        h.status.to_string()
    } else if let Some(g) = h.grpc_status.filter(|g| *g != 0) {
        g.to_string()
    } else if h.response_flags != 0 {
        span::response_flags(h.response_flags)
    } else {
        "_OTHER".to_string()
    }
}

/// `host[:port]`, `[v6]:port` → host and port.
fn split_authority(authority: &str) -> (&str, Option<u64>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

struct Attributes<'a> {
    out: &'a mut String,
    first: bool,
}

impl Attributes<'_> {
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str("{\"key\":");
        string(key, self.out);
        self.out.push_str(",\"value\":");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.push_str("{\"stringValue\":");
        string(value, self.out);
        self.out.push_str("}}");
    }

    fn strings(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out
            .push_str("{\"arrayValue\":{\"values\":[{\"stringValue\":");
        string(value, self.out);
        self.out.push_str("}]}}}");
    }

    /// int64 travels as a JSON string in proto3's JSON mapping.
    fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{{\"intValue\":\"{value}\"}}}}");
    }

    fn boolean(&mut self, key: &str, value: bool) {
        self.key(key);
        let _ = write!(self.out, "{{\"boolValue\":{value}}}}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::fixture;
    use serde_json::Value;

    fn attrs(span: &Value) -> Vec<(String, Value)> {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone()))
            .collect()
    }

    fn attr(span: &Value, key: &str) -> Option<Value> {
        attrs(span)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    #[test]
    fn shape_and_semantic_conventions() {
        let json: Value = serde_json::from_str(&encode(&[fixture()])).unwrap();
        let rs = &json["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "gateway"}})
        );
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(span["spanId"], "e457b5a2e4d86bd1");
        assert_eq!(span["parentSpanId"], "05e3ac9a4f6e3b90");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000001234567");
        assert_eq!(span["status"]["code"], 2);
        let rows: &[(&str, Value)] = &[
            (
                "http.request.method",
                serde_json::json!({"stringValue": "GET"}),
            ),
            ("url.scheme", serde_json::json!({"stringValue": "http"})),
            ("url.path", serde_json::json!({"stringValue": "/hello"})),
            (
                "url.query",
                serde_json::json!({"stringValue": "<redacted>"}),
            ),
            (
                "server.address",
                serde_json::json!({"stringValue": "example.com"}),
            ),
            (
                "network.peer.address",
                serde_json::json!({"stringValue": "10.1.2.3"}),
            ),
            (
                "network.peer.port",
                serde_json::json!({"intValue": "51000"}),
            ),
            (
                "http.response.status_code",
                serde_json::json!({"intValue": "503"}),
            ),
            ("error.type", serde_json::json!({"stringValue": "503"})),
            (
                "network.protocol.name",
                serde_json::json!({"stringValue": "http"}),
            ),
            (
                "network.protocol.version",
                serde_json::json!({"stringValue": "1.1"}),
            ),
            (
                "http.response.body.size",
                serde_json::json!({"intValue": "91"}),
            ),
            (
                "envoy.response_flags",
                serde_json::json!({"stringValue": "UF"}),
            ),
            (
                "envoy.upstream_cluster",
                serde_json::json!({"stringValue": "app"}),
            ),
            (
                "sampling.reason",
                serde_json::json!({"stringValue": "rate"}),
            ),
            (
                "http.request.header.x-tenant",
                serde_json::json!({"arrayValue": {"values": [{"stringValue": "acme"}]}}),
            ),
            (
                "user_agent.original",
                serde_json::json!({"stringValue": "curl \"quoted\"\n\u{1}"}),
            ),
        ];
        for (key, want) in rows {
            assert_eq!(attr(span, key).as_ref(), Some(want), "attribute {key}");
        }
        assert_eq!(
            attr(span, "url.full"),
            None,
            "server spans carry url parts only"
        );
        assert_eq!(
            attr(span, "http.request.body.size"),
            None,
            "unknown size omitted"
        );
    }

    #[test]
    fn client_root_ok_64_bit_and_grouped_by_service() {
        let mut a = fixture();
        a.kind = Kind::Client;
        a.parent_id = None;
        a.error = false;
        a.http.status = 200;
        a.trace_id.high = 0;
        a.trace_id.wide = false;
        let mut b = fixture();
        b.service_name = "other".into();
        let json: Value = serde_json::from_str(&encode(&[a.clone(), b, a])).unwrap();
        let groups = json["resourceSpans"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        let spans = groups[0]["scopeSpans"][0]["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(s["traceId"], "000000000000000048485a3953bb6124");
        assert_eq!(s["kind"], 3);
        assert!(s.get("parentSpanId").is_none());
        assert!(s.get("status").is_none());
        assert_eq!(attr(s, "error.type"), None);
        assert_eq!(
            attr(s, "url.full"),
            Some(serde_json::json!({"stringValue": "http://example.com/hello?<redacted>"}))
        );
    }

    #[test]
    fn error_type_rows() {
        let rows: &[(&str, u64, Option<u64>, u64, &str)] = &[
            ("5xx", 502, None, 0, "502"),
            ("no response, flags", 0, None, 1 << 5, "UF"),
            ("grpc failure", 200, Some(14), 0, "14"),
            ("nothing known", 0, None, 0, "_OTHER"),
        ];
        for (name, status, grpc, flags, want) in rows {
            let mut s = fixture();
            s.http.status = *status;
            s.http.grpc_status = *grpc;
            s.http.response_flags = *flags;
            assert_eq!(error_type(&s), *want, "row {name}");
        }
    }

    #[test]
    fn authority_rows() {
        let rows: &[(&str, &str, Option<u64>)] = &[
            ("example.com", "example.com", None),
            ("example.com:8080", "example.com", Some(8080)),
            ("[::1]:80", "::1", Some(80)),
            ("::1", "::1", None),
            ("", "", None),
            ("h:x", "h:x", None),
        ];
        for (input, host, port) in rows {
            assert_eq!(split_authority(input), (*host, *port), "row {input}");
        }
    }

    #[test]
    fn empty_batch() {
        assert_eq!(encode(&[]), "{\"resourceSpans\":[]}");
    }
}
