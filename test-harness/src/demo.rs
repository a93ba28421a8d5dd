//! `test-harness demo`: the demo topology, a few requests, the resulting traces, and pointers.

use crate::expect::metric_value;
use crate::runner::{run_scenario, Live, Outcome, Tools};
use crate::scenario::Scenario;
use crate::spans::render_traces;
use std::io::BufRead;

/// The demo topology (also replayable as a scenario file: test-harness/demo/demo.yaml).
pub const DEMO_YAML: &str = include_str!("../demo/demo.yaml");

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
            println!("\n--hold: everything stays up; press Enter to stop.");
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        }
    };
    let o = run_scenario(&sc, tools, &mut on_live);
    println!("\nrequests:");
    for c in o.checks.iter().filter(|c| c.label.starts_with("request[")) {
        println!(
            "  {} {}: got {}",
            if c.pass { "ok  " } else { "FAIL" },
            c.label,
            c.detail
        );
    }
    println!("\ntraces received by the fake Zipkin collector:");
    if o.spans.is_empty() {
        println!("  (none)");
    }
    for l in render_traces(&o.spans).lines() {
        println!("  {l}");
    }
    println!("\nmeshtrace counters:");
    for (envoy, stats) in &o.metrics {
        let shown: Vec<String> = [
            "spans_started",
            "spans_sampled",
            "spans_not_sampled",
            "spans_exported",
            "sampling_debug",
            "sampling_force",
            "sampling_rate_header",
            "sampling_upstream",
            "export_requests_ok",
        ]
        .iter()
        .map(|k| format!("{k}={}", metric_value(stats, k)))
        .collect();
        println!("  {envoy:<13} {}", shown.join(" "));
    }
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
  - this demo as a scenario: test-harness/demo/demo.yaml (`demo --hold` keeps it running)
  - README.md: plugin configuration, B3 rules, sampling precedence, span tags, metrics;
    test-harness/README.md: scenario schema"
    );
    Ok(o)
}
