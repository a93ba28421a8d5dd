//! Parsing and validation of scenario files, including every shipped one.

use super::*;
use std::collections::BTreeSet;

#[test]
fn parses_full_example() {
    let sc = Scenario::from_yaml(
        r#"
name: t
envoys:
  - name: gw
    config: gateway
    plugin_config: {collector: {flush_interval_ms: 100}}
upstreams:
  - name: app
requests:
  - via: gw
    headers: {x-b3-sampled: 1, x-dup: [a, b]}
    repeat: 2
expect:
  upstream_headers:
    app:
      - request: 0
        headers: {x-b3-sampled: "1", x-b3-parentspanid: {absent: true}}
      - request: all
        headers: {x-b3-traceid: {re: "^[0-9a-f]{32}$"}}
  spans:
    count: 2
    match:
      - {kind: SERVER, tags: {http.status_code: 200}}
      - {parent: 0}
  metrics: {gw: {spans_sampled: 2, spans_exported: [1, 2]}}
  sampled_matches_spans: app
"#,
    )
    .unwrap();
    assert_eq!(sc.requests[0].headers.0.len(), 3);
    assert_eq!(sc.requests[0].headers.0[0].1, "1");
    assert_eq!(sc.upstream_of(&sc.envoys[0]).as_deref(), Some("app"));
    assert_eq!(
        sc.expect.upstream_headers["app"][1].request,
        RequestSel::All
    );
    assert!(sc.expect.metrics["gw"]["spans_exported"].accepts(2));
    assert!(!sc.expect.metrics["gw"]["spans_sampled"].accepts(1));
}

#[test]
fn readme_example_is_a_valid_scenario() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("## Scenario schema")
        .and_then(|i| readme[i..].find("```yaml").map(|j| i + j + 7))
        .unwrap();
    let end = start + readme[start..].find("```").unwrap();
    let sc = Scenario::from_yaml(&readme[start..end]).unwrap();
    assert_eq!(sc.envoys.len(), 2);
    assert_eq!(
        sc.expect.spans.as_ref().unwrap().matchers[1].parent,
        Some(0)
    );
}

#[test]
fn demo_and_shipped_scenarios_parse() {
    Scenario::from_yaml(crate::report::demo::DEMO_YAML).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "yaml") {
            let sc = Scenario::load(&e.path()).unwrap();
            let stem = e.path().file_stem().unwrap().to_string_lossy().into_owned();
            assert_eq!(sc.name, stem, "scenario name = file name");
            assert!(names.insert(sc.name), "duplicate scenario name {stem}");
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} scenarios");
}

#[test]
fn new_schema_parts_parse_and_validate() {
    let sc = Scenario::from_yaml(
        r#"
name: t
envoys:
  - {name: gw, config: gateway, collector_via: rel, node: {id: n, metadata: {NAMESPACE: ns}}}
  - {name: rel, config: sidecar-inbound}
upstreams:
  - name: app
    responses: [{when_path_prefix: /g, headers: {grpc-status: "13"}}]
requests:
  - {via: gw, abort_after_ms: 50}
  - {via: gw, max_ms: 100}
expect:
  upstream_headers: {app: [{request: [0, 2], headers: {x-a: "1"}}]}
  upstream_unique: {app: x-b3-traceid}
  prometheus: {gw: {spans_sampled: 1}}
  envoy_stats: {gw: [{name_re: "^listener", value: [1, 2]}]}
  collector_requests: {max_concurrent: 2, spans_per_request: [1, 5]}
  spans: {every: {kind: SERVER}}
"#,
    )
    .unwrap();
    assert_eq!(sc.relayed_by("rel").unwrap().name, "gw");
    assert_eq!(
        sc.upstream_of(&sc.envoys[1]),
        None,
        "a relay has no app upstream"
    );
    assert_eq!(sc.upstreams[0].responses[0].status, 200);
    assert_eq!(
        sc.expect.upstream_headers["app"][0].request,
        RequestSel::List(vec![0, 2])
    );
    let bad = |yaml: &str| Scenario::from_yaml(yaml).unwrap_err();
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway, collector_via: gw}]\n");
    assert!(e.contains("another Envoy"), "{e}");
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nrequests: [{via: gw, abort_after_ms: 5, expect_status: 200}]\n");
    assert!(e.contains("abort_after_ms"), "{e}");
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true, node: {metadata: [1]}}]\n");
    assert!(e.contains("node.metadata"), "{e}");
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nexpect: {logs: {gw: {matches: ['(']}}}\n");
    assert!(
        e.contains("matches") && e.contains("bad regex \"(\""),
        "{e}"
    );
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nexpect: {envoy_stats: {gw: [{name_re: '[', value: 1}]}}\n");
    assert!(e.contains("envoy_stats.gw[0]: bad regex \"[\""), "{e}");
}

#[test]
fn real_collector_schema() {
    let sc = Scenario::from_yaml(
        r#"
name: t
real_collector: jaeger
envoys:
  - {name: gw, config: gateway, upstream_envoy: side}
  - {name: side, config: sidecar-inbound}
upstreams: [{name: app, report_span: {service: app}}]
expect:
  collected:
    traces: 1
    spans: [2, 3]
    services: [a, b]
    nested: true
    match: [{serviceName: a}, {parent: 0}]
"#,
    )
    .unwrap();
    assert_eq!(sc.real_collector, Some(RealCollectorKind::Jaeger));
    assert_eq!(sc.upstream_of(&sc.envoys[0]), None);
    let waves = sc.start_waves().unwrap();
    assert_eq!(waves.len(), 2);
    assert_eq!(waves[0][0].name, "side");
    let c = sc.expect.collected.as_ref().unwrap();
    assert!(c.spans.unwrap().accepts(3) && c.nested && c.matchers.len() == 2);
    let bad = |yaml: &str| Scenario::from_yaml(yaml).unwrap_err();
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nexpect: {collected: {empty: true}}\n");
    assert!(e.contains("needs real_collector"), "{e}");
    let e = bad("name: t\nenvoys: [{name: gw, config: gateway}]\nupstreams: [{name: a, report_span: {service: x}}]\n");
    assert!(e.contains("report_span needs real_collector"), "{e}");
    let e = bad("name: t\nenvoys: [{name: a, config: gateway, upstream_envoy: b}, {name: b, config: gateway, upstream_envoy: a}]\n");
    assert!(e.contains("cycle"), "{e}");
    let e = bad("name: t\nreal_collector: zipkin\ncollector: {mode: down}\nenvoys: [{name: a, config: gateway, upstream_unreachable: true}]\n");
    assert!(e.contains("do not apply"), "{e}");
    let e = bad("name: t\nreal_collector: zipkin\nenvoys: [{name: a, config: gateway, upstream_unreachable: true}]\nexpect: {collected: {empty: true, spans: 2}}\n");
    assert!(e.contains("contradicts"), "{e}");
}

#[test]
fn rejects_bad_references_and_unknown_fields() {
    let e = Scenario::from_yaml(
        "name: t\nenvoys: [{name: gw, config: gateway, upstream: nope}]\nrequests: [{via: x}]\n",
    )
    .unwrap_err();
    assert!(
        e.contains("unknown upstream nope") && e.contains("unknown envoy x"),
        "{e}"
    );
    let e = Scenario::from_yaml("name: t\nenvoys: [{name: gw, config: gateway, bogus: 1}]\n")
        .unwrap_err();
    assert!(e.contains("bogus"), "{e}");
    let e = Scenario::from_yaml("name: t\nenvoys: [{name: gw, config: gatewayy}]\n").unwrap_err();
    assert!(e.contains("gatewayy"), "{e}");
}

#[test]
fn generated_header_values() {
    let h: HeaderList =
        serde_yaml::from_str("{a: {fill: '0-', len: 5}, b: {value: x, times: 3}, c: plain}")
            .unwrap();
    let pairs: Vec<(&str, &str)> = h.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("a", "0-0-0"),
            ("b", "x"),
            ("b", "x"),
            ("b", "x"),
            ("c", "plain")
        ]
    );
    for bad in [
        "{a: {fill: '', len: 5}}",
        "{a: {fill: x}}",
        "{a: {value: x, times: -1}}",
        "{a: {len: 5, times: 2}}",
    ] {
        assert!(serde_yaml::from_str::<HeaderList>(bad).is_err(), "{bad}");
    }
}

#[test]
fn collector_schedule_rows() {
    let spec = |yaml: &str| serde_yaml::from_str::<CollectorSpec>(yaml).unwrap();
    let flap = spec("flap: {up_ms: 600, down_ms: 400}");
    // (t, up at t, next change after t)
    let rows: &[(u64, bool, (u64, bool))] = &[
        (0, true, (600, false)),
        (599, true, (600, false)),
        (600, false, (1000, true)),
        (999, false, (1000, true)),
        (1000, true, (1600, false)),
        (2650, false, (3000, true)),
    ];
    for &(t, up, next) in rows {
        assert_eq!(flap.up_at(t), up, "flap up_at({t})");
        assert_eq!(flap.next_change(t), Some(next), "flap next_change({t})");
    }
    let outages = spec("outages: [{from_ms: 0, to_ms: 100}, {from_ms: 500, to_ms: 900}]");
    type Row = (u64, bool, Option<(u64, bool)>);
    let rows: &[Row] = &[
        (0, false, Some((100, true))),
        (100, true, Some((500, false))),
        (499, true, Some((500, false))),
        (500, false, Some((900, true))),
        (900, true, None),
    ];
    for &(t, up, next) in rows {
        assert_eq!(outages.up_at(t), up, "outages up_at({t})");
        assert_eq!(outages.next_change(t), next, "outages next_change({t})");
    }
    let plain = CollectorSpec::default();
    assert!(!plain.scheduled() && plain.up_at(5) && plain.next_change(0).is_none());
}

#[test]
fn collector_fault_fields() {
    let spec = |yaml: &str| serde_yaml::from_str::<CollectorSpec>(yaml).unwrap();
    let c = spec("{fault_status: 429, retry_after: '2', fault_every: 3}");
    let faulted: Vec<u64> = (1..=7).filter(|n| c.faults_request(*n)).collect();
    assert_eq!(faulted, [3, 6]);
    assert_eq!(
        c.fault_name().as_deref(),
        Some("status 429 + Retry-After 2 (1 in 3)")
    );
    let c = spec("{fault: black_hole}");
    assert!(c.faults_request(1) && c.fault_name().as_deref() == Some("black_hole"));
    assert!(!spec("{status: 500}").faults_request(1));
    let ok = |collector: &str, expect: &str| {
        Scenario::from_yaml(&format!(
            "name: t\nenvoys: [{{name: gw, config: gateway, upstream_unreachable: true}}]\n\
             collector: {collector}\nexpect: {{collector_requests: {expect}}}\n"
        ))
    };
    // (collector, collector_requests expectation, error substring or "" for valid)
    let rows = [
        (
            "{status: 429, retry_after: '1'}",
            "{honours_retry_after: true}",
            "",
        ),
        (
            "{fault_status: 503, fault_every: 2, retry_after: '1'}",
            "{faulted: [1, 9]}",
            "",
        ),
        (
            "{outages: [{from_ms: 10, to_ms: 20}]}",
            "{resumed_within_ms: 500}",
            "",
        ),
        (
            "{flap: {up_ms: 5, down_ms: 5}}",
            "{resumed_within_ms: 500}",
            "",
        ),
        ("{fault: black_hole}", "{faulted: 3}", ""),
        (
            "{fault: close_mid_body, fault_status: 503}",
            "{}",
            "exclusive",
        ),
        ("{fault_status: 204}", "{}", "must fail the export"),
        (
            "{retry_after: '1'}",
            "{}",
            "rides on the failing status answers",
        ),
        (
            "{status: 503, retry_after: \"1\\r\\nx: y\"}",
            "{}",
            "printable header value",
        ),
        (
            "{mode: down, flap: {up_ms: 5, down_ms: 5}}",
            "{}",
            "need mode up",
        ),
        ("{mode: down, fault_status: 503}", "{}", "need mode up"),
        ("{flap: {up_ms: 0, down_ms: 5}}", "{}", "at least 1"),
        ("{outages: [{from_ms: 20, to_ms: 20}]}", "{}", "below to_ms"),
        (
            "{outages: [{from_ms: 5, to_ms: 20}, {from_ms: 20, to_ms: 30}]}",
            "{}",
            "after outages[0] ends",
        ),
        (
            "{outages: [{from_ms: 5, to_ms: 9}], flap: {up_ms: 5, down_ms: 5}}",
            "{}",
            "exclusive",
        ),
        (
            "{}",
            "{resumed_within_ms: 500}",
            "needs collector.outages or flap",
        ),
        (
            "{}",
            "{honours_retry_after: true}",
            "needs collector.retry_after",
        ),
        (
            "{}",
            "{faulted: 1}",
            "needs collector.fault or fault_status",
        ),
    ];
    for (collector, expect, err) in rows {
        match ok(collector, expect) {
            Ok(_) => assert!(err.is_empty(), "{collector} {expect}: valid, want {err:?}"),
            Err(e) => assert!(
                !err.is_empty() && e.contains(err),
                "{collector} {expect}: {e}"
            ),
        }
    }
    let e = Scenario::from_yaml(
        "name: t\nreal_collector: zipkin\ncollector: {flap: {up_ms: 5, down_ms: 5}}\n\
         envoys: [{name: a, config: gateway, upstream_unreachable: true}]\n",
    )
    .unwrap_err();
    assert!(e.contains("do not apply"), "{e}");
}
