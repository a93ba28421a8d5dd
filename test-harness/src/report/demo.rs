//! `test-harness demo`: the demo topology, a few requests, the resulting traces, and pointers.

use crate::model::expect::metric_value;
use crate::model::scenario::Scenario;
use crate::model::spans::render_traces;
use crate::run::collectors::trace_links;
use crate::run::envoy::hold_until_interrupt;
use crate::run::runner::{run_scenario, Live, Outcome};
use crate::tools::Tools;
use std::collections::BTreeSet;

/// The basic demo topology (also replayable as a scenario file: test-harness/demo/demo.yaml).
pub const DEMO_YAML: &str = include_str!("../../demo/demo.yaml");
/// Seed topology a: Istio ingress gateway → sidecar → app, traces in a real Jaeger.
pub const TOPOLOGY_A_YAML: &str = include_str!("../../scenarios/200-topology-a-istio-jaeger.yaml");
/// Seed topology b: Linkerd-style outbound/inbound proxies, traces in a real Zipkin.
pub const TOPOLOGY_B_YAML: &str =
    include_str!("../../scenarios/210-topology-b-linkerd-zipkin.yaml");

/// The names `demo --topology` accepts.
pub const TOPOLOGIES: [&str; 3] = ["a", "b", "basic"];

/// `test-harness demo --topology T [--hold]`: `a` and `b` run the seed topologies against a real
/// collector and print the traces read back from it; `basic` is the fake-collector demo.
pub fn run_topology(tools: &Tools, topology: &str, hold: bool) -> Result<Outcome, String> {
    let yaml = match topology {
        "a" => TOPOLOGY_A_YAML,
        "b" => TOPOLOGY_B_YAML,
        "basic" => return run_demo(tools, hold),
        other => {
            return Err(format!(
                "unknown topology {other:?} (one of {})",
                TOPOLOGIES.join(", ")
            ))
        }
    };
    let sc = Scenario::from_yaml(yaml)?;
    tools.require(true)?;
    let mut tools = tools.clone();
    tools.well_known_ports = true;
    let kind = sc.real_collector.map_or("?", |k| k.name());
    println!(
        "meshtrace demo: topology {topology} ({}) with a real {kind}",
        sc.name
    );
    for l in sc.description.trim().lines() {
        println!("  {l}");
    }
    println!(
        "\nstarting {kind}, {} Envoys and {} app(s); sending {} request(s)…",
        sc.envoys.len(),
        sc.upstreams.len(),
        sc.requests.len()
    );
    let mut on_live = |live: &Live| {
        println!("\ntraces read back from {kind}'s query API:");
        if live.collected.is_empty() {
            println!("  (none)");
        }
        for l in render_traces(live.collected).lines() {
            println!("  {l}");
        }
        if let Some((k, q)) = live.collector {
            let ids: BTreeSet<String> = live.collected.iter().map(|s| s.trace_id()).collect();
            println!("\n{kind} (while the demo runs):");
            for id in &ids {
                for l in trace_links(k, q, id) {
                    println!("  {l}");
                }
            }
            match k {
                crate::model::scenario::RealCollectorKind::Zipkin => {
                    println!("  http://{q}/zipkin/   (Zipkin UI: search, dependencies)")
                }
                crate::model::scenario::RealCollectorKind::Jaeger => println!(
                    "  http://{q}/api/services   (Jaeger's UI is a placeholder page: this jaeger binary has no UI build)"
                ),
            }
        }
        print_live(live);
        if hold {
            println!("\n--hold: everything stays up; press Ctrl-C to stop.");
            hold_until_interrupt();
            println!("\nstopping…");
        }
    };
    let o = run_scenario(&sc, &tools, &mut on_live);
    print_requests(&o);
    print_counters(&o, &EXPORT_COUNTERS);
    print_verdict(&o);
    println!(
        "\nthe same topology as a scenario: cargo run -p test-harness -- replay test-harness/scenarios/{}.yaml",
        sc.name
    );
    Ok(o)
}

fn print_live(live: &Live) {
    println!("\nlive admin endpoints:");
    for (name, admin) in &live.admin {
        println!("  {name:<21} http://{admin}/stats?filter=meshtrace_");
    }
    for (name, l) in &live.listeners {
        println!("  {name:<21} listener http://{l}/");
    }
}

fn print_requests(o: &Outcome) {
    println!("\nrequests:");
    for c in o.checks.iter().filter(|c| c.label.starts_with("request[")) {
        println!(
            "  {} {}: got {}",
            if c.pass { "ok  " } else { "FAIL" },
            c.label,
            c.detail
        );
    }
}

/// Counters the seed topologies show: did every span reach the collector?
const EXPORT_COUNTERS: [&str; 6] = [
    "spans_sampled",
    "spans_not_sampled",
    "spans_exported",
    "spans_dropped",
    "export_requests_ok",
    "export_requests_failed",
];

/// Counters the basic demo shows: which sampling rule decided.
const SAMPLING_COUNTERS: [&str; 9] = [
    "spans_started",
    "spans_sampled",
    "spans_not_sampled",
    "spans_exported",
    "sampling_debug",
    "sampling_force",
    "sampling_rate_header",
    "sampling_upstream",
    "export_requests_ok",
];

fn print_counters(o: &Outcome, names: &[&str]) {
    println!("\nmeshtrace counters:");
    for (envoy, stats) in &o.metrics {
        let shown: Vec<String> = names
            .iter()
            .map(|k| format!("{k}={}", metric_value(stats, k)))
            .collect();
        println!("  {envoy:<21} {}", shown.join(" "));
    }
}

fn print_verdict(o: &Outcome) {
    let failed: Vec<_> = o.checks.iter().filter(|c| !c.pass).collect();
    if failed.is_empty() {
        println!("\ndemo checks: all {} passed", o.checks.len());
    } else {
        println!("\ndemo checks: {} failed:", failed.len());
        for c in failed {
            println!("  FAIL {}: {}", c.label, c.detail);
        }
        if let Some(d) = &o.run_dir {
            println!("  logs kept in {}", d.display());
        }
    }
}

pub fn run_demo(tools: &Tools, hold: bool) -> Result<Outcome, String> {
    let sc = Scenario::from_yaml(DEMO_YAML)?;
    tools.require(true)?;
    println!("meshtrace demo");
    for l in sc.description.trim().lines() {
        println!("  {l}");
    }
    println!(
        "\nstarting Envoys and sending {} requests…",
        sc.requests.len()
    );
    let mut on_live = |live: &Live| {
        println!("\nlive admin endpoints (while the demo runs):");
        for (name, admin) in &live.admin {
            println!("  {name:<13} http://{admin}/stats?filter=meshtrace_");
        }
        for (name, l) in &live.listeners {
            println!(
                "  {name:<13} listener http://{l}/   (curl -H 'x-b3-flags: 1' http://{l}/gettime)"
            );
        }
        if hold {
            println!("\n--hold: everything stays up; press Ctrl-C to stop.");
            hold_until_interrupt();
            println!("\nstopping…");
        }
    };
    let o = run_scenario(&sc, tools, &mut on_live);
    print_requests(&o);
    println!("\ntraces received by the fake Zipkin collector:");
    if o.spans.is_empty() {
        println!("  (none)");
    }
    for l in render_traces(&o.spans).lines() {
        println!("  {l}");
    }
    print_counters(&o, &SAMPLING_COUNTERS);
    print_verdict(&o);
    println!(
        "\nwhat to look at next:
  - run a gateway yourself (needs an app on :8080 and a Zipkin collector on :9411):
      make build && ENVOY_PATH=<envoy> .tools/bin/func-e run -c envoy/gateway.yaml
      curl -H 'x-b3-flags: 1' http://127.0.0.1:10000/
      curl -s http://127.0.0.1:9901/stats?filter=meshtrace_      (counters; admin port 9901)
      sidecar configs: envoy/sidecar-inbound.yaml (admin :15000, listener :15006),
                       envoy/sidecar-outbound.yaml (admin :15000, listener :15001)
  - scenarios: test-harness/scenarios/*.yaml, e.g.
      cargo run -p test-harness -- replay test-harness/scenarios/040-sampling-precedence.yaml
  - this demo as a scenario: test-harness/demo/demo.yaml (`demo --topology basic --hold` keeps it running)
  - the seed topologies with real collectors: `demo --topology a` (Jaeger), `demo --topology b` (Zipkin)
  - README.md: plugin configuration, B3 rules, sampling precedence, span tags, metrics;
    test-harness/README.md: scenario schema"
    );
    Ok(o)
}
