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

/// A tag as the Zipkin encoder writes it.
fn tag_of(span: &Span, key: &str) -> Option<String> {
    let json: serde_json::Value =
        serde_json::from_str(&crate::export::zipkin::encode(std::slice::from_ref(span))).unwrap();
    json[0]["tags"][key].as_str().map(str::to_string)
}

fn only(spans: Vec<Span>) -> Span {
    assert_eq!(spans.len(), 1, "one span per stream");
    spans.into_iter().next().unwrap()
}

#[test]
fn new_root_is_128_bit_and_sampled_at_rate_one() {
    let mut host = FakeHost::default();
    let s = start(
        &cfg(r#"{"sampling":{"rate":1}}"#),
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
    let s = start(&c, req(&[("l5d-sample", "1.0")]), || 0, &mut host);
    assert_eq!(edit(&s, "l5d-sample"), Some(None));
    assert_eq!(s.span.map(|o| o.reason), Some(Reason::RateHeader));

    let mut host = FakeHost::default();
    let s = start(&c, req(&[("l5d-sample", "lots")]), || 0, &mut host);
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
        req(&[("x-b3-traceid", "XYZ"), ("x-b3-spanid", "e457b5a2e4d86bd1")]),
        || 0,
        &mut host,
    );
    assert_eq!(host.counted(Counter::InvalidContext), 1);
    let open = s.span.unwrap();
    assert_eq!(open.out.parent_id, None);
    assert!(open
        .extra
        .iter()
        .any(|e| e.key == tag::INVALID_CONTEXT && e.value == "x-b3-traceid"));
}

#[test]
fn finished_span_has_envoy_tags() {
    let c = cfg(
        r#"{"sampling":{"rate":1},"tags":{"static":{"env":"test"},"request_headers":["x-tenant"],"max_value_length":5}}"#,
    );
    let mut host = FakeHost::default();
    let s = start(
        &c,
        req(&[("x-tenant", "acme-corporation")]),
        || 2_000_000,
        &mut host,
    );
    let span = only(finish(
        &c,
        &node(),
        s.span.unwrap(),
        StreamEnd {
            now_ns: 5_500_000,
            status: Some(503),
            response_flags: Some(1 << 5),
            peer: Some("127.0.0.1:40000".into()),
            upstream_cluster: Some("app".into()),
            upstream_address: Some("10.0.0.7:8080".into()),
            listener_direction: Some(2),
            protocol: Some("HTTP/1.1".into()),
            ..StreamEnd::default()
        },
    ));
    assert_eq!(span.kind, Kind::Client);
    assert_eq!(
        span.remote,
        "10.0.0.7:8080".parse().ok(),
        "CLIENT: upstream host"
    );
    assert_eq!(span.timestamp_us(), 2_000);
    assert_eq!(span.duration_us(), 3_500);
    assert_eq!(span.name, "examp");
    assert_eq!(tag_of(&span, "http.status_code").as_deref(), Some("503"));
    assert_eq!(tag_of(&span, "error").as_deref(), Some("true"));
    assert_eq!(tag_of(&span, "response_flags").as_deref(), Some("UF"));
    assert_eq!(tag_of(&span, "peer.address").as_deref(), Some("127.0"));
    assert_eq!(tag_of(&span, "env").as_deref(), Some("test"));
    assert_eq!(tag_of(&span, "x-tenant").as_deref(), Some("acme-"));
    assert_eq!(tag_of(&span, "component").as_deref(), Some("proxy"));
    assert_eq!(tag_of(&span, "sampling.reason").as_deref(), Some("rate"));
}

#[test]
fn url_is_redacted_by_default() {
    let c = cfg(r#"{"sampling":{"rate":1}}"#);
    let mut host = FakeHost::default();
    let open = start(&c, req(&[]), || 0, &mut host).span.unwrap();
    assert_eq!(open.http.url, "http://example.com/hello?<redacted>");
    assert_eq!(open.http.target, "/hello?<redacted>");
}

#[test]
fn status_200_has_no_error_and_no_response_is_error() {
    let c = cfg(r#"{"sampling":{"rate":1}}"#);
    let mut host = FakeHost::default();
    let ok = only(finish(
        &c,
        &node(),
        start(&c, req(&[]), || 0, &mut host).span.unwrap(),
        StreamEnd {
            status: Some(200),
            ..StreamEnd::default()
        },
    ));
    assert_eq!(tag_of(&ok, "error"), None);
    assert_eq!(ok.kind, Kind::Server);
    let none = only(finish(
        &c,
        &node(),
        start(&c, req(&[]), || 0, &mut host).span.unwrap(),
        StreamEnd::default(),
    ));
    assert_eq!(tag_of(&none, "http.status_code").as_deref(), Some("0"));
    assert_eq!(tag_of(&none, "error").as_deref(), Some("true"));
}

const TP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP_SPAN: &str = "00f067aa0ba902b7";

fn w3c_cfg(extra: &str) -> Config {
    cfg(&format!(
        r#"{{"sampling":{{"rate":0}},"propagation":{{"extract":["b3_multi","b3_single","w3c"],"inject":["b3_multi","w3c"]}}{extra}}}"#
    ))
}

/// Which context wins when several formats arrive: one row per rule of the written precedence.
#[test]
fn context_precedence_rows() {
    let tp = format!("00-{TP_TRACE}-{TP_SPAN}-01");
    let tp_unsampled = format!("00-{TP_TRACE}-{TP_SPAN}-00");
    let b3_trace = "463ac35c9f6413ad48485a3953bb6124";
    let b3_span = "e457b5a2e4d86bd1";
    let single = format!("{b3_trace}-{b3_span}-0");
    type Row<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        &'a str,
        bool,
        Option<&'a str>,
    );
    let rows: Vec<Row> = vec![
        // (name, headers, trace id out, parent out, sampled, malformed)
        (
            "traceparent alone",
            vec![("traceparent", &tp)],
            TP_TRACE,
            TP_SPAN,
            true,
            None,
        ),
        (
            "traceparent unsampled is a decision",
            vec![("traceparent", &tp_unsampled)],
            TP_TRACE,
            TP_SPAN,
            false,
            None,
        ),
        (
            "x-b3 ids beat traceparent",
            vec![
                ("traceparent", &tp),
                ("x-b3-traceid", b3_trace),
                ("x-b3-spanid", b3_span),
                ("x-b3-sampled", "0"),
            ],
            b3_trace,
            b3_span,
            false,
            None,
        ),
        (
            "b3 single beats traceparent",
            vec![("traceparent", &tp), ("b3", &single)],
            b3_trace,
            b3_span,
            false,
            None,
        ),
        (
            "malformed x-b3 falls back to traceparent, reported",
            vec![
                ("traceparent", &tp),
                ("x-b3-traceid", "XYZ"),
                ("x-b3-spanid", b3_span),
            ],
            TP_TRACE,
            TP_SPAN,
            true,
            Some("x-b3-traceid"),
        ),
        (
            "traceparent's decision beats a lone x-b3-sampled",
            vec![("traceparent", &tp), ("x-b3-sampled", "0")],
            TP_TRACE,
            TP_SPAN,
            true,
            None,
        ),
    ];
    for (name, headers, trace, parent, sampled, malformed) in rows {
        let mut host = FakeHost::default();
        let s = start(&w3c_cfg(""), req(&headers), || 0, &mut host);
        assert_eq!(edit(&s, "x-b3-traceid"), Some(Some(trace)), "row {name}");
        assert_eq!(
            edit(&s, "x-b3-parentspanid"),
            Some(Some(parent)),
            "row {name}"
        );
        let span = edit(&s, "x-b3-spanid").flatten().unwrap_or_default();
        let flag = if sampled { "01" } else { "00" };
        let want_tp = format!("00-{:0>32}-{span}-{flag}", trace);
        assert_eq!(
            edit(&s, "traceparent"),
            Some(Some(want_tp.as_str())),
            "row {name}"
        );
        assert_eq!(s.span.is_some(), sampled, "row {name}");
        assert_eq!(
            host.counted(Counter::InvalidContext),
            malformed.is_some() as u64,
            "row {name}"
        );
        if let (Some(m), Some(open)) = (malformed, &s.span) {
            assert!(
                open.extra.iter().any(|e| e.value == m),
                "row {name}: invalid_context tag {m}"
            );
        }
    }
}

#[test]
fn malformed_traceparent_starts_a_new_trace_and_tracestate_is_untouched() {
    let mut host = FakeHost::default();
    let s = start(
        &w3c_cfg(""),
        req(&[
            ("traceparent", "00-XYZ-00f067aa0ba902b7-01"),
            ("tracestate", "vendor=abc"),
        ]),
        || 0,
        &mut host,
    );
    assert_eq!(host.counted(Counter::InvalidContext), 1);
    assert_eq!(edit(&s, "x-b3-parentspanid"), None);
    assert!(
        edit(&s, "tracestate").is_none(),
        "tracestate is never edited"
    );
    let tp = edit(&s, "traceparent").flatten().unwrap_or_default();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
}

#[test]
fn traceparent_read_but_not_written_is_removed_and_ignored_when_not_read() {
    let tp = format!("00-{TP_TRACE}-{TP_SPAN}-01");
    let read_only = cfg(
        r#"{"sampling":{"rate":0},"propagation":{"extract":["b3_multi","w3c"],"inject":["b3_multi"]}}"#,
    );
    let mut host = FakeHost::default();
    let s = start(&read_only, req(&[("traceparent", &tp)]), || 0, &mut host);
    assert_eq!(edit(&s, "traceparent"), Some(None));
    assert_eq!(edit(&s, "x-b3-traceid"), Some(Some(TP_TRACE)));
    // Default formats do not read W3C: traceparent passes through untouched and is not used.
    let s = start(&cfg("{}"), req(&[("traceparent", &tp)]), || 0, &mut host);
    assert_eq!(edit(&s, "traceparent"), None);
    assert_ne!(edit(&s, "x-b3-traceid"), Some(Some(TP_TRACE)));
}

fn caller() -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ]
}

fn shape(json: &str, headers: &[(&'static str, &'static str)]) -> (Start, Vec<Span>) {
    let c = cfg(json);
    let mut host = FakeHost::default();
    let s = start(&c, req(headers), || 1_000_000, &mut host);
    let mut open = s.span.clone().unwrap();
    open.upstream_end_ns = Some(3_000_000);
    let spans = finish(
        &c,
        &node(),
        open,
        StreamEnd {
            now_ns: 4_000_000,
            status: Some(200),
            peer: Some("10.0.0.9:5000".into()),
            upstream_address: Some("10.0.0.7:8080".into()),
            upstream_cluster: Some("app".into()),
            listener_direction: Some(1),
            ..StreamEnd::default()
        },
    );
    (s, spans)
}

/// One row per span-shape option: ids, parents, kinds, and what travels upstream.
#[test]
fn span_shape_rows() {
    let caller_span = SpanId(0xe457_b5a2_e4d8_6bd1);
    let caller_parent = SpanId(0x05e3_ac9a_4f6e_3b90);

    // one + child: our span is new, child of the caller; upstream sees our span.
    let (s, spans) = shape("{}", &caller());
    let [one] = &spans[..] else {
        panic!("one span")
    };
    assert_eq!(one.parent_id, Some(caller_span));
    assert_eq!(
        edit(&s, "x-b3-spanid"),
        Some(Some(one.id.to_string().as_str()))
    );
    assert!(!one.shared);

    // one + shared: the SERVER span reuses the caller's id and parent; upstream's parent is it.
    let (s, spans) = shape(r#"{"span_ids":"shared"}"#, &caller());
    let [one] = &spans[..] else {
        panic!("one span")
    };
    assert_eq!(
        (one.id, one.parent_id, one.shared),
        (caller_span, Some(caller_parent), true)
    );
    assert_eq!(
        edit(&s, "x-b3-parentspanid"),
        Some(Some("e457b5a2e4d86bd1"))
    );

    // server_client + child: SERVER child of caller, CLIENT child of SERVER; upstream sees CLIENT.
    let (s, spans) = shape(r#"{"span_shape":"server_client"}"#, &caller());
    let [server, client] = &spans[..] else {
        panic!("two spans")
    };
    assert_eq!((server.kind, client.kind), (Kind::Server, Kind::Client));
    assert_eq!(server.parent_id, Some(caller_span));
    assert_eq!(client.parent_id, Some(server.id));
    assert_ne!(server.id, caller_span);
    assert_eq!(
        edit(&s, "x-b3-spanid"),
        Some(Some(client.id.to_string().as_str()))
    );
    assert_eq!(
        edit(&s, "x-b3-parentspanid"),
        Some(Some(server.id.to_string().as_str()))
    );
    assert_eq!(
        (server.start_ns, server.duration_ns),
        (1_000_000, 3_000_000)
    );
    assert_eq!(
        (client.start_ns, client.duration_ns),
        (1_000_000, 2_000_000)
    );
    assert_eq!(server.remote, "10.0.0.9:5000".parse().ok());
    assert_eq!(client.remote, "10.0.0.7:8080".parse().ok());
    assert_eq!(server.http.upstream_cluster, None);
    assert_eq!(client.http.peer, None);

    // server_client + shared: SERVER takes the caller's id and parent; CLIENT is its child.
    let (s, spans) = shape(
        r#"{"span_shape":"server_client","span_ids":"shared"}"#,
        &caller(),
    );
    let [server, client] = &spans[..] else {
        panic!("two spans")
    };
    assert_eq!(
        (server.id, server.parent_id, server.shared),
        (caller_span, Some(caller_parent), true)
    );
    assert_eq!(client.parent_id, Some(caller_span));
    assert_eq!(
        edit(&s, "x-b3-parentspanid"),
        Some(Some("e457b5a2e4d86bd1"))
    );

    // shared without a caller: nothing to share, a new root SERVER span.
    let (_, spans) = shape(
        r#"{"span_shape":"server_client","span_ids":"shared","sampling":{"rate":1}}"#,
        &[],
    );
    let [server, client] = &spans[..] else {
        panic!("two spans")
    };
    assert_eq!((server.parent_id, server.shared), (None, false));
    assert_eq!(client.parent_id, Some(server.id));
}

/// The adapter reads `xds.listener_direction` only when `reads_listener_direction` says so: one row
/// per span_kind × span_shape, each checked against what `finish` does with the two directions.
#[test]
fn listener_direction_is_read_exactly_when_it_decides_the_kind() {
    for (json, reads) in [
        ("", true),
        (r#""span_kind": "server""#, false),
        (r#""span_kind": "client""#, false),
        (r#""span_shape": "server_client""#, false),
        (
            r#""span_shape": "server_client", "span_kind": "client""#,
            false,
        ),
    ] {
        let sep = if json.is_empty() { "" } else { "," };
        let c = cfg(&format!(r#"{{"sampling": {{"rate": 1}}{sep} {json}}}"#));
        let s = start(&c, req(&[]), || 1, &mut FakeHost::default());
        let open = s.span.clone().unwrap();
        assert_eq!(reads_listener_direction(&c, &open), reads, "{json}");
        let kinds = |dir| {
            let end = StreamEnd {
                now_ns: 2,
                listener_direction: Some(dir),
                ..StreamEnd::default()
            };
            let spans = finish(&c, &node(), open.clone(), end);
            spans.iter().map(|s| s.kind).collect::<Vec<_>>()
        };
        assert_eq!(kinds(1) != kinds(2), reads, "{json}");
    }
}
