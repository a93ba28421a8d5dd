//! Reading back what a real collector stored (`real_collector:` scenarios), and looking at it in
//! the Zipkin UI.

use super::Run;
use crate::model::expect::{expected_stored, Check, Collected};
use crate::model::scenario::ZipkinUiExpect;
use crate::model::spans::{truncate, Span};
use crate::run::collectors::RealCollector;
use crate::run::ui::{check_zipkin_trace, ZipkinPage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const UI_CONTROL: &str = "zipkin UI check fails for a trace that does not exist (control)";

impl Run<'_> {
    /// With a real collector: records the apps' requests so far (they tell how many spans it
    /// should store), polls it for its spans, then runs the Zipkin UI checks if asked.
    pub(super) fn read_back(&mut self) {
        let Some(c) = &self.real else {
            return;
        };
        for (name, u) in &self.upstreams {
            self.obs.upstreams.insert(name.clone(), u.records());
        }
        let collected = read_collected(c, expected_stored(&self.obs));
        let ui = self.sc.expect.collected.as_ref();
        if let Some(ui) = ui.and_then(|e| e.zipkin_ui.as_ref()) {
            let checks = zipkin_ui_checks(c, ui, &collected, self.run_dir);
            self.outcome.checks.extend(checks);
        }
        self.obs.collected = Some(collected);
    }
}

/// Polls the real collector until the number of stored spans is `expected` and stable across
/// two polls (or stable for ~1.5 s at another number, or 10 s pass).
fn read_collected(c: &RealCollector, expected: u64) -> Collected {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    let mut prev: Option<usize> = None;
    let mut stable = 0;
    let mut spans = Vec::new();
    let mut error: Option<String>;
    loop {
        let pause = if prev.is_none() { 150 } else { 250 };
        std::thread::sleep(Duration::from_millis(pause));
        match c.read_spans() {
            Ok(v) => {
                error = None;
                let n = v.len();
                stable = if prev == Some(n) { stable + 1 } else { 0 };
                prev = Some(n);
                spans = v;
                if (n as u64 == expected && stable >= 1) || stable >= 6 {
                    break;
                }
            }
            Err(e) => error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let services = c.services().unwrap_or_else(|e| {
        error.get_or_insert(e);
        Vec::new()
    });
    Collected {
        kind: c.kind.name().to_string(),
        spans: spans.into_iter().map(service_span).collect(),
        services,
        error,
        ingest: c.ingest_stats(),
        waited_ms: t0.elapsed().as_millis() as u64,
    }
}

/// A stored Zipkin span, named by its service (the collector does not know Envoy names).
fn service_span(raw: serde_json::Value) -> Span {
    let svc = raw
        .get("localEndpoint")
        .and_then(|l| l.get("serviceName"))
        .and_then(|s| s.as_str())
        .unwrap_or("?")
        .to_string();
    Span::new(&svc, raw)
}

/// Opens every stored trace in the Zipkin UI with headless Chromium (the first one also
/// screenshotted when asked).
fn zipkin_ui_checks(
    c: &RealCollector,
    ui: &ZipkinUiExpect,
    collected: &Collected,
    run_dir: &Path,
) -> Vec<Check> {
    let mut traces: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for s in &collected.spans {
        let t = traces.entry(s.trace_id()).or_default();
        t.0 += 1;
        t.1.insert(s.field("serviceName").unwrap_or_default());
    }
    if traces.is_empty() {
        return vec![Check::fail(
            "zipkin UI (headless Chromium)",
            "no trace stored to look at",
        )];
    }
    let mut screenshot = std::env::var_os("MESHTRACE_UI_SCREENSHOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| ui.screenshot.as_ref().map(|f| run_dir.join(f)));
    let mut checks = vec![control_check(c)];
    for (trace_id, (spans, services)) in traces {
        let page = ZipkinPage {
            base: format!("http://{}", c.query),
            trace_id: trace_id.clone(),
            spans,
            services: services.into_iter().collect(),
            // Only the first trace is screenshotted.
            screenshot: screenshot.take(),
        };
        let label = format!("zipkin UI (headless Chromium) shows trace {trace_id}");
        checks.push(match check_zipkin_trace(&page) {
            Ok(detail) => Check::pass(label, detail),
            Err(why) => Check::fail(label, why),
        });
    }
    checks
}

/// The same UI check on a trace id nobody reported must fail, or passing it proves nothing.
fn control_check(c: &RealCollector) -> Check {
    let control = ZipkinPage {
        base: format!("http://{}", c.query),
        trace_id: "0000000000000000000000000000beef".to_string(),
        spans: 1,
        services: vec!["nobody".to_string()],
        screenshot: None,
    };
    match check_zipkin_trace(&control) {
        Ok(d) => Check::fail(UI_CONTROL, format!("it passed: {d}")),
        Err(why) => Check::pass(UI_CONTROL, truncate(&why, 160)),
    }
}
