use super::*;
use crate::config;

#[derive(Default)]
struct FakeHost {
    next: u64,
    counts: Vec<(Counter, u64)>,
}

impl Host for FakeHost {
    fn random_u64(&mut self) -> u64 {
        self.next += 1;
        0x1000 + self.next
    }
    fn count(&mut self, counter: Counter, n: u64) {
        self.counts.push((counter, n));
    }
}

impl FakeHost {
    fn counted(&self, c: Counter) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| *k == c)
            .map(|(_, n)| n)
            .sum()
    }
}

fn cfg(json: &str) -> Config {
    config::parse(json.as_bytes()).unwrap()
}

fn node() -> Node {
    Node {
        id: "sidecar~10.0.0.1~app-1.ns~ns.svc.cluster.local".into(),
        service_name: "app.ns".into(),
    }
}

fn req<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":authority", "example.com"),
        (":path", "/hello?token=secret"),
        (":scheme", "http"),
        ("user-agent", "curl/8"),
        ("x-request-id", "4a7c1e0e-0000-4000-8000-000000000001"),
    ];
    h.extend_from_slice(extra);
    h
}

fn edit<'a>(s: &'a Start, name: &str) -> Option<Option<&'a str>> {
    s.edits
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.value.as_deref())
}

fn tag_of<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.tags
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn new_root_is_128_bit_and_sampled_at_rate_one() {
    let mut host = FakeHost::default();
    let s = start(
        &cfg(r#"{"sampling":{"rate":1}}"#),
        &node(),
        req(&[]),
        || 5_000,
        &mut host,
    );
    let trace = edit(&s, "x-b3-traceid").flatten().unwrap_or_default();
    assert_eq!(trace.len(), 32);
    assert_eq!(edit(&s, "x-b3-sampled"), Some(Some("1")));
    assert_eq!(edit(&s, "x-b3-parentspanid"), None);
    assert!(s.span.is_some());
    assert_eq!(host.counted(Counter::SpansSampled), 1);
    assert_eq!(host.counted(Counter::SamplingRate), 1);
}

#[test]
fn continues_caller_trace_with_new_span() {
    let mut host = FakeHost::default();
    let s = start(
        &cfg("{}"),
        &node(),
        req(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ]),
        || 0,
        &mut host,
    );
    assert_eq!(edit(&s, "x-b3-traceid"), Some(Some("a3ce929d0e0e4736")));
    assert_eq!(
        edit(&s, "x-b3-parentspanid"),
        Some(Some("e457b5a2e4d86bd1"))
    );
    assert_ne!(edit(&s, "x-b3-spanid"), Some(Some("e457b5a2e4d86bd1")));
    assert_eq!(s.span.map(|o| o.reason), Some(Reason::Upstream));
}

#[test]
fn unsampled_request_still_propagates_and_records_nothing() {
    let mut host = FakeHost::default();
    let s = start(
        &cfg(r#"{"sampling":{"rate":0}}"#),
        &node(),
        req(&[]),
        || 0,
        &mut host,
    );
    assert_eq!(edit(&s, "x-b3-sampled"), Some(Some("0")));
    assert!(s.span.is_none());
    assert_eq!(host.counted(Counter::SpansNotSampled), 1);
}

#[test]
fn rate_header_is_consumed_and_invalid_values_counted() {
    let c = cfg(r#"{"sampling":{"rate":0,"override_header":"l5d-sample"}}"#);
    let mut host = FakeHost::default();
    let s = start(&c, &node(), req(&[("l5d-sample", "1.0")]), || 0, &mut host);
    assert_eq!(edit(&s, "l5d-sample"), Some(None));
    assert_eq!(s.span.map(|o| o.reason), Some(Reason::RateHeader));

    let mut host = FakeHost::default();
    let s = start(&c, &node(), req(&[("l5d-sample", "lots")]), || 0, &mut host);
    assert_eq!(edit(&s, "l5d-sample"), Some(None));
    assert!(s.span.is_none());
    assert_eq!(host.counted(Counter::InvalidRateHeader), 1);
}

#[test]
fn trust_switches() {
    let c = cfg(r#"{"sampling":{"rate":0,"trust_debug":false,"trust_upstream":false}}"#);
    let mut host = FakeHost::default();
    let s = start(
        &c,
        &node(),
        req(&[("x-b3-flags", "1"), ("x-b3-sampled", "1")]),
        || 0,
        &mut host,
    );
    assert!(s.span.is_none());
    assert_eq!(
        edit(&s, "x-b3-flags"),
        Some(None),
        "untrusted debug is not forwarded"
    );
    assert_eq!(edit(&s, "x-b3-sampled"), Some(Some("0")));
}

#[test]
fn force_header() {
    let mut host = FakeHost::default();
    let s = start(
        &cfg(r#"{"sampling":{"rate":0}}"#),
        &node(),
        req(&[("x-envoy-force-trace", "true"), ("x-b3-sampled", "0")]),
        || 0,
        &mut host,
    );
    assert_eq!(s.span.map(|o| o.reason), Some(Reason::Force));
    assert_eq!(host.counted(Counter::SamplingForce), 1);
}

#[test]
fn malformed_context_starts_root_and_tags_it() {
    let mut host = FakeHost::default();
    let s = start(
        &cfg(r#"{"sampling":{"rate":1}}"#),
        &node(),
        req(&[("x-b3-traceid", "XYZ"), ("x-b3-spanid", "e457b5a2e4d86bd1")]),
        || 0,
        &mut host,
    );
    assert_eq!(host.counted(Counter::InvalidContext), 1);
    let open = s.span.unwrap();
    assert_eq!(open.out.parent_id, None);
    assert!(open
        .tags
        .iter()
        .any(|(k, v)| k == tag::INVALID_CONTEXT && v == "x-b3-traceid"));
}

#[test]
fn finished_span_has_envoy_tags() {
    let c = cfg(
        r#"{"sampling":{"rate":1},"tags":{"static":{"env":"test"},"request_headers":["x-tenant"],"max_value_length":5}}"#,
    );
    let mut host = FakeHost::default();
    let s = start(
        &c,
        &node(),
        req(&[("x-tenant", "acme-corporation")]),
        || 2_000_000,
        &mut host,
    );
    let span = finish(
        &c,
        &node(),
        s.span.unwrap(),
        StreamEnd {
            now_ns: 5_500_000,
            status: Some(503),
            response_flags: Some(1 << 5),
            peer: Some("127.0.0.1:40000".into()),
            upstream_cluster: Some("app".into()),
            listener_direction: Some(2),
            protocol: Some("HTTP/1.1".into()),
            ..StreamEnd::default()
        },
    );
    assert_eq!(span.kind, Kind::Client);
    assert_eq!(span.timestamp_us, 2_000);
    assert_eq!(span.duration_us, 3_500);
    assert_eq!(span.name, "examp");
    assert_eq!(tag_of(&span, "http.status_code"), Some("503"));
    assert_eq!(tag_of(&span, "error"), Some("true"));
    assert_eq!(tag_of(&span, "response_flags"), Some("UF"));
    assert_eq!(tag_of(&span, "peer.address"), Some("127.0"));
    assert_eq!(tag_of(&span, "env"), Some("test"));
    assert_eq!(tag_of(&span, "x-tenant"), Some("acme-"));
    assert_eq!(tag_of(&span, "component"), Some("proxy"));
    assert_eq!(tag_of(&span, "sampling.reason"), Some("rate"));
}

#[test]
fn url_is_redacted_by_default() {
    let c = cfg(r#"{"sampling":{"rate":1}}"#);
    let mut host = FakeHost::default();
    let open = start(&c, &node(), req(&[]), || 0, &mut host).span.unwrap();
    let url = open
        .tags
        .iter()
        .find(|(k, _)| k == "http.url")
        .map(|(_, v)| v.clone());
    assert_eq!(url.as_deref(), Some("http://example.com/hello?<redacted>"));
}

#[test]
fn status_200_has_no_error_and_no_response_is_error() {
    let c = cfg(r#"{"sampling":{"rate":1}}"#);
    let mut host = FakeHost::default();
    let ok = finish(
        &c,
        &node(),
        start(&c, &node(), req(&[]), || 0, &mut host).span.unwrap(),
        StreamEnd {
            status: Some(200),
            ..StreamEnd::default()
        },
    );
    assert_eq!(tag_of(&ok, "error"), None);
    assert_eq!(ok.kind, Kind::Server);
    let none = finish(
        &c,
        &node(),
        start(&c, &node(), req(&[]), || 0, &mut host).span.unwrap(),
        StreamEnd::default(),
    );
    assert_eq!(tag_of(&none, "http.status_code"), Some("0"));
    assert_eq!(tag_of(&none, "error"), Some("true"));
}
