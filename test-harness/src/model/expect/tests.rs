//! `evaluate` end to end: scenarios' `expect:` blocks against hand-built observations.

use super::builtin::{builtin, no_crash};
use super::*;
use crate::model::scenario::Scenario;
use serde_json::json;

fn req(h: &[(&str, &str)]) -> RecordedRequest {
    RecordedRequest {
        method: "GET".into(),
        path: "/".into(),
        headers: h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn span(tid: &str, id: &str, parent: Option<&str>, url: &str) -> Span {
    let mut v = json!({"traceId": tid, "id": id, "kind": "SERVER", "name": "GET",
        "timestamp": 1, "duration": 5, "localEndpoint": {"serviceName": "gateway"},
        "tags": {"http.url": url, "http.status_code": "200"}});
    if let Some(p) = parent {
        v["parentId"] = json!(p);
    }
    Span::new("gw", v)
}

fn obs() -> Observations {
    let t = "463ac35c9f6413ad48485a3953bb6124";
    let mut o = Observations::default();
    o.upstreams.insert(
        "app".into(),
        vec![
            req(&[
                ("x-b3-traceid", t),
                ("x-b3-spanid", "000000000000000a"),
                ("x-b3-sampled", "1"),
            ]),
            req(&[
                ("x-b3-traceid", t),
                ("x-b3-spanid", "000000000000000b"),
                ("x-b3-sampled", "1"),
            ]),
            req(&[
                ("x-b3-traceid", "1111111111111111"),
                ("x-b3-spanid", "000000000000000c"),
                ("x-b3-sampled", "0"),
            ]),
        ],
    );
    o.spans = vec![
        span(t, "000000000000000b", Some("000000000000000a"), "/b"),
        span(t, "000000000000000a", None, "/a"),
    ];
    o.envoy_upstream.insert("gw".into(), Some("app".into()));
    o.metrics.insert(
        "gw".into(),
        BTreeMap::from([
            ("wasmcustom.meshtrace_spans_sampled".to_string(), 2),
            ("wasmcustom.meshtrace_spans_exported".to_string(), 2),
            ("wasmcustom.meshtrace_spans_dropped".to_string(), 0),
        ]),
    );
    o.logs.insert(
        "gw".into(),
        "line one\n[critical] meshtrace: invalid configuration: sampling.rate: bad\n".into(),
    );
    o
}

fn run(expect_yaml: &str) -> Vec<Check> {
    let text = format!(
        "name: t\nenvoys: [{{name: gw, config: gateway}}]\nupstreams: [{{name: app}}]\nexpect:\n{}",
        expect_yaml
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let sc = Scenario::from_yaml(&text).unwrap();
    evaluate(&sc.expect, &obs())
}

fn fails(checks: &[Check]) -> Vec<&Check> {
    checks.iter().filter(|c| !c.pass).collect()
}

#[test]
fn passing_expectations() {
    let checks = run(r#"
upstream_requests: {app: 3}
upstream_headers:
  app:
    - request: 1
      headers:
        x-b3-traceid: {ref: app/0/x-b3-traceid}
        x-b3-spanid: {not: {ref: app/0/x-b3-spanid}}
    - request: all
      headers: {x-b3-sampled: {one_of: ["0", "1"]}, x-b3-flags: {absent: true}}
upstream_sampled_between: {app: [2, 2]}
sampled_matches_spans: app
spans:
  count: 2
  traces: 1
  per_trace: 2
  per_envoy: {gw: 2}
  all_tags: {http.status_code: "200"}
  match:
    - {tags: {http.url: /b}, parent: 1, id: {ref: app/1/x-b3-spanid}}
    - {parentId: {absent: true}, serviceName: gateway}
metrics: {gw: {spans_sampled: 2, spans_exported: [1, 3], spans_dropped: 0}}
logs: {gw: {contains: ["sampling.rate"], not_contains: ["panicked"]}}
"#);
    assert!(fails(&checks).is_empty(), "{:#?}", fails(&checks));
    assert!(checks.len() > 10);
}

#[test]
fn failing_expectations_explain_themselves() {
    let checks = run(r#"
upstream_headers:
  app:
    - request: all
      headers: {x-b3-sampled: "1"}
    - request: 7
      headers: {x-b3-sampled: "1"}
spans:
  count: 3
  match:
    - {tags: {http.url: /nope}}
    - {serviceName: gateway}
    - {parentId: {absent: true}}
    - {parentId: {absent: true}, parent: 0}
metrics: {gw: {spans_sampled: 3, spans_lost: 0}}
logs: {gw: {contains: ["unknown key"]}}
"#);
    let f = fails(&checks);
    let text = format!("{f:#?}");
    assert!(text.contains("1 of 3 request(s) failed: #2"), "{text}");
    assert!(text.contains("received only 3"), "{text}");
    assert!(text.contains("closest is"), "{text}");
    assert!(text.contains("got 3") || text.contains("got 2"), "{text}");
    assert!(text.contains("relevant log lines"), "{text}");
    assert!(text.contains("no counter meshtrace_spans_lost"), "{text}");
    assert_eq!(f.len(), 7, "{text}");
}

#[test]
fn assignment_needs_distinct_spans_and_links() {
    let o = obs();
    let sc = Scenario::from_yaml(
        "name: t\nenvoys: [{name: gw, config: gateway}]\nupstreams: [{name: app}]\nexpect:\n  spans:\n    match:\n      - {parentId: {absent: true}}\n      - {parentId: {absent: true}}\n",
    )
    .unwrap();
    let ms = &sc.expect.spans.as_ref().unwrap().matchers;
    let (cands, a) = assign_spans(ms, &o.spans, &o);
    assert_eq!(cands[0], vec![1]);
    assert!(a.is_none(), "two matchers cannot share one span");
    let sc = Scenario::from_yaml(
        "name: t\nenvoys: [{name: gw, config: gateway}]\nupstreams: [{name: app}]\nexpect:\n  spans:\n    match:\n      - {parent: 1}\n      - {}\n",
    )
    .unwrap();
    let ms = &sc.expect.spans.as_ref().unwrap().matchers;
    let (_, a) = assign_spans(ms, &o.spans, &o);
    assert_eq!(a, Some(vec![0, 1]));
}

#[test]
fn prometheus_lines() {
    let text = "# TYPE meshtrace_spans_sampled counter\nmeshtrace_spans_sampled{} 12\n\
                meshtrace_spans_dropped{} 3\n# TYPE envoy_x counter\nenvoy_x{} 1\n";
    assert_eq!(prometheus_counter(text, "spans_sampled"), (Some(12), true));
    assert_eq!(
        prometheus_counter(text, "meshtrace_spans_sampled"),
        (Some(12), true)
    );
    assert_eq!(prometheus_counter(text, "spans_dropped"), (Some(3), false));
    assert_eq!(prometheus_counter(text, "spans"), (None, false));
    let mut o = obs();
    o.prometheus.insert("gw".into(), text.into());
    let sc = Scenario::from_yaml(
        "name: t\nenvoys: [{name: gw, config: gateway}]\nupstreams: [{name: app}]\nexpect:\n  prometheus: {gw: {spans_sampled: 12, spans_dropped: 3, spans_lost: 0}}\n",
    )
    .unwrap();
    let checks = evaluate(&sc.expect, &o);
    let f = fails(&checks);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f[0].detail.contains("no `# TYPE"), "{f:#?}");
    assert!(f[1].detail.contains("no line"), "{f:#?}");
}

#[test]
fn uniqueness_concurrency_every_and_window() {
    let checks = run(r#"
upstream_unique: {app: [x-b3-traceid, x-b3-spanid, x-b3-sampled, x-missing]}
upstream_headers: {app: [{request: [0, 1], headers: {x-b3-sampled: "1"}}, {request: [0, 9], headers: {}}]}
collector_requests: {max_concurrent: 0}
spans: {every: {kind: SERVER, parentId: {absent: true}}}
"#);
    let f = fails(&checks);
    let text = format!("{f:#?}");
    assert!(
        text.contains("own x-b3-traceid") && text.contains("1 repeated"),
        "{text}"
    );
    assert!(
        text.contains("own x-b3-sampled") && text.contains("own x-missing"),
        "{text}"
    );
    assert!(!text.contains("own x-b3-spanid"), "{text}");
    assert!(text.contains("no #9"), "{text}");
    assert!(
        text.contains("every span") && text.contains("1 mismatch"),
        "{text}"
    );
    assert_eq!(f.len(), 5, "{text}");
    // Spans outside the run window are a built-in failure.
    let mut o = obs();
    o.window_us = Some((2, 3));
    let mut out = Vec::new();
    builtin(&o, &mut out);
    assert!(out
        .iter()
        .any(|c| !c.pass && c.detail.contains("outside the run")));
}

#[test]
fn crash_lines_fail() {
    let mut o = obs();
    o.logs.insert(
        "gw".into(),
        "ok\n[critical][wasm] wasm log meshtrace: panic: boom\n".into(),
    );
    let mut out = Vec::new();
    no_crash(&[], &o, &mut out);
    assert!(!out[0].pass && out[0].detail.contains("panic: boom"));
    // An Envoy that must have trapped passes with the line and fails without it.
    let mut out = Vec::new();
    no_crash(&["gw".to_string()], &o, &mut out);
    assert!(out[0].pass, "trap expected and seen");
    o.logs.insert("gw".into(), "ok\n".into());
    let mut out = Vec::new();
    no_crash(&["gw".to_string()], &o, &mut out);
    assert!(!out[0].pass, "trap expected, none seen");
}

#[test]
fn metric_suffix_matching() {
    let stats = BTreeMap::from([
        ("wasmcustom.meshtrace_spans_sampled".to_string(), 4),
        ("wasmcustom.meshtrace_debug_spans_sampled".to_string(), 100),
        ("other.spans_dropped".to_string(), 7),
    ]);
    assert_eq!(metric_value(&stats, "spans_sampled"), 4);
    assert_eq!(metric_value(&stats, "meshtrace_spans_sampled"), 4);
    assert_eq!(metric_value(&stats, "spans_dropped"), 7);
    assert_eq!(metric_value(&stats, "spans_exported"), 0);
}
