//! Human-readable scenario reports.

pub mod demo;

use crate::model::spans::render_traces;
use crate::run::runner::Outcome;

/// Maximum number of traces drawn per scenario (large statistical runs are summarised).
pub const MAX_TRACES_SHOWN: usize = 12;

pub fn render(o: &Outcome) -> String {
    let mut out = String::new();
    let status = if o.passed() { "PASS" } else { "FAIL" };
    out.push_str(&format!("━━ {} — {status}\n", o.name));
    if !o.description.trim().is_empty() {
        for l in o.description.trim().lines() {
            out.push_str(&format!("   {l}\n"));
        }
    }
    if let Some(f) = &o.file {
        out.push_str(&format!("   file: {}\n", f.display()));
    }
    for c in &o.checks {
        let tag = if c.pass { "PASS" } else { "FAIL" };
        if c.pass && !c.detail.is_empty() && !c.detail.contains('\n') && c.detail.len() <= 120 {
            out.push_str(&format!("   {tag}  {}  [{}]\n", c.label, c.detail));
        } else {
            out.push_str(&format!("   {tag}  {}\n", c.label));
        }
        if !c.pass && !c.detail.is_empty() {
            for l in c.detail.lines() {
                out.push_str(&format!("         → {l}\n"));
            }
        }
    }
    out.push_str(&render_trace_section(o));
    if let Some(d) = &o.run_dir {
        out.push_str(&format!("   run dir kept: {}\n", d.display()));
        for (envoy, dir) in &o.envoy_log_dirs {
            out.push_str(&format!("     envoy {envoy} logs: {}\n", dir.display()));
        }
    }
    let failed = o.checks.iter().filter(|c| !c.pass).count();
    out.push_str(&format!(
        "   => {status} {} ({:.1}s, {} checks, {failed} failed)\n",
        o.name,
        o.elapsed.as_secs_f64(),
        o.checks.len()
    ));
    out
}

fn render_trace_section(o: &Outcome) -> String {
    match o.collector {
        Some((kind, _)) => {
            let mut out = trace_section(&o.collected, &format!("stored in {}", kind.name()));
            if !o.spans.is_empty() {
                out.push_str(&trace_section(&o.spans, "received by the fake collector"));
            }
            out
        }
        None => trace_section(&o.spans, "collected"),
    }
}

fn trace_section(spans: &[crate::model::spans::Span], what: &str) -> String {
    if spans.is_empty() {
        return format!("   traces: none {what}\n");
    }
    let tree = render_traces(spans);
    let mut traces: Vec<String> = Vec::new();
    for line in tree.lines() {
        if line.starts_with("trace ") {
            traces.push(String::new());
        }
        if let Some(t) = traces.last_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    let n = traces.len();
    let mut out = format!(
        "   traces {what} ({n} trace{}, {} span{}):\n",
        if n == 1 { "" } else { "s" },
        spans.len(),
        if spans.len() == 1 { "" } else { "s" }
    );
    for t in traces.iter().take(MAX_TRACES_SHOWN) {
        for l in t.lines() {
            out.push_str(&format!("     {l}\n"));
        }
    }
    if n > MAX_TRACES_SHOWN {
        out.push_str(&format!(
            "     … {} more trace(s) not shown (all spans are in spans.json with --keep-logs)\n",
            n - MAX_TRACES_SHOWN
        ));
    }
    out
}

/// The closing summary line ("N passed, M failed") plus the failing names.
pub fn summary(outcomes: &[Outcome]) -> String {
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let failed = outcomes.len() - passed;
    let mut out = String::new();
    if failed > 0 {
        out.push_str("failing scenarios:\n");
        for o in outcomes.iter().filter(|o| !o.passed()) {
            let first = o
                .checks
                .iter()
                .find(|c| !c.pass)
                .map(|c| c.label.clone())
                .unwrap_or_default();
            out.push_str(&format!("  - {} (first failure: {first})\n", o.name));
        }
    }
    out.push_str(&format!("scenarios: {passed} passed, {failed} failed\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::expect::Check;
    use crate::model::spans::Span;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn report_lists_checks_details_and_traces() {
        let o = Outcome {
            name: "x".into(),
            description: "desc".into(),
            file: None,
            checks: vec![
                Check::pass("good", ""),
                Check::pass("info", "got 1"),
                Check::fail("bad", "got 3\nsecond line"),
            ],
            spans: vec![Span::new(
                "gw",
                json!({"traceId": "0000000000000001", "id": "0000000000000002", "kind": "SERVER",
                       "name": "GET /", "timestamp": 1, "duration": 2,
                       "localEndpoint": {"serviceName": "gateway"}}),
            )],
            metrics: BTreeMap::new(),
            envoy_log_dirs: BTreeMap::new(),
            run_dir: Some("/tmp/run".into()),
            elapsed: Duration::from_millis(1500),
            collected: Vec::new(),
            collector: None,
        };
        let r = render(&o);
        assert!(r.starts_with("━━ x — FAIL\n   desc\n"), "{r}");
        assert!(r.contains("   PASS  good\n   PASS  info  [got 1]\n   FAIL  bad\n         → got 3\n         → second line\n"));
        assert!(r.contains(
            "traces collected (1 trace, 1 span):\n     trace 0000000000000001 (1 span)\n     └─ gateway"
        ));
        assert!(r.contains("run dir kept: /tmp/run"));
        assert!(r.contains("=> FAIL x (1.5s, 3 checks, 1 failed)"));
        let s = summary(&[o]);
        assert!(s.ends_with("scenarios: 0 passed, 1 failed\n"), "{s}");
        assert!(s.contains("first failure: bad"));
    }
}
