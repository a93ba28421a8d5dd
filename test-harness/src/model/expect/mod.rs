//! Evaluation of a scenario's `expect:` block against what was observed. Pure: no I/O.
//!
//! One file per thing observed: the upstreams' requests, the exported spans (and how matchers
//! are assigned to them), the fake collector (and its fault modes), a real collector's store, the
//! Envoys' counters and logs; `builtin` holds the checks every scenario gets, `accounting` the
//! ones every scenario with the fake collector gets.

mod accounting;
mod assign;
mod builtin;
mod collected;
mod collector;
mod counters;
mod fault;
mod logs;
mod spans;
mod upstream;

pub use assign::assign_spans;
pub use collected::{app_reported, expected_stored};
pub use counters::{find_metric, metric_value, prometheus_counter};
pub use fault::fault_checks;

use crate::model::matcher::{Matcher, RefResolver};
use crate::model::observed::{ExportPost, RecordedRequest, Timeline};
use crate::model::scenario::Expect;
use crate::model::spans::{truncate, Span};
use std::collections::BTreeMap;

/// One expectation result line.
#[derive(Debug, Clone)]
pub struct Check {
    pub pass: bool,
    pub label: String,
    /// On failure: what was observed. On success: optional short info.
    pub detail: String,
}

impl Check {
    pub fn pass(label: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            pass: true,
            label: label.into(),
            detail: detail.into(),
        }
    }

    pub fn fail(label: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            pass: false,
            label: label.into(),
            detail: detail.into(),
        }
    }

    pub fn new(pass: bool, label: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            pass,
            label: label.into(),
            detail: detail.into(),
        }
    }
}

/// Everything a scenario run observed.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Upstream name → requests in arrival order.
    pub upstreams: BTreeMap<String, Vec<RecordedRequest>>,
    /// All spans from all export requests, in arrival order.
    pub spans: Vec<Span>,
    pub posts: Vec<ExportPost>,
    /// Envoy name → stat name → value (only Envoys that started).
    pub metrics: BTreeMap<String, BTreeMap<String, u64>>,
    /// Envoy name → its log text.
    pub logs: BTreeMap<String, String>,
    /// Envoy name → upstream name its `app` cluster points at.
    pub envoy_upstream: BTreeMap<String, Option<String>>,
    /// Envoy name → `/stats/prometheus` text (only Envoys with `prometheus` expectations).
    pub prometheus: BTreeMap<String, String>,
    /// Envoy name → every stat (only Envoys with `envoy_stats` expectations).
    pub all_stats: BTreeMap<String, BTreeMap<String, u64>>,
    /// Wall-clock window (µs since the epoch) from before the Envoys started to after quiescence:
    /// every span must lie inside it.
    pub window_us: Option<(u64, u64)>,
    /// The most export requests the collector held open at one time.
    pub collector_max_concurrent: u64,
    /// How the fake collector fails exports (`collector.fault`/`fault_status`), if it does.
    pub collector_fault: Option<String>,
    /// The Envoys exported to the fake collector (no `real_collector`).
    pub fake_collector: bool,
    /// The fake collector's downs and ups, and when the requests were sent (its clock).
    pub timeline: Timeline,
    /// What a real collector stored (`real_collector:` scenarios).
    pub collected: Option<Collected>,
}

/// A real collector's own ingest counters.
#[derive(Debug, Clone, Default)]
pub struct IngestStats {
    /// Spans the collector says it accepted.
    pub accepted: f64,
    /// Every dropped/refused counter (name, value).
    pub dropped: Vec<(String, f64)>,
}

/// What a real collector stored, read back through its query API after quiescence.
#[derive(Debug, Clone)]
pub struct Collected {
    /// `jaeger` or `zipkin`.
    pub kind: String,
    /// Stored spans in the Zipkin v2 shape; `Span::envoy` is the service name.
    pub spans: Vec<Span>,
    pub services: Vec<String>,
    /// Why reading the query API failed, if it did.
    pub error: Option<String>,
    pub ingest: Result<IngestStats, String>,
    /// How long the harness polled until the stored span count was stable.
    pub waited_ms: u64,
}

impl RefResolver for Observations {
    fn resolve(&self, reference: &str) -> Result<Option<String>, String> {
        let mut parts = reference.splitn(3, '/');
        let (up, idx, header) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let idx: usize = idx
            .parse()
            .map_err(|_| format!("ref {reference}: bad request index"))?;
        let reqs = self
            .upstreams
            .get(up)
            .ok_or_else(|| format!("ref {reference}: unknown upstream {up}"))?;
        let req = reqs.get(idx).ok_or_else(|| {
            format!(
                "ref {reference}: upstream {up} received only {} request(s)",
                reqs.len()
            )
        })?;
        Ok(req.header(header))
    }
}

/// Every check of `expect` against `obs`, built-in ones first, in report order.
pub fn evaluate(expect: &Expect, obs: &Observations) -> Vec<Check> {
    let mut out = Vec::new();
    builtin::builtin(obs, &mut out);
    builtin::no_crash(&expect.trapped, obs, &mut out);
    upstream::upstream_checks(expect, obs, &mut out);
    accounting::accounting_checks(obs, &mut out);
    out.extend(fault_checks(expect.collector_requests.as_ref(), obs));
    if let Some(sp) = &expect.spans {
        spans::span_checks(sp, obs, &mut out);
    }
    if let Some(c) = &obs.collected {
        collected::builtin_checks(c, obs, &mut out);
        if let Some(ce) = &expect.collected {
            collected::collected_checks(ce, c, obs, &mut out);
        }
    }
    counters::metric_checks(&expect.metrics, obs, &mut out);
    counters::prometheus_checks(&expect.prometheus, obs, &mut out);
    counters::envoy_stat_checks(&expect.envoy_stats, obs, &mut out);
    logs::log_checks(&expect.logs, obs, &mut out);
    if let Some(ce) = &expect.collector_requests {
        collector::collector_checks(ce, obs, &mut out);
    }
    out
}

fn describe_headers(h: &BTreeMap<String, Matcher>) -> String {
    truncate(
        &h.iter()
            .map(|(k, m)| format!("{k}={m}"))
            .collect::<Vec<_>>()
            .join(", "),
        160,
    )
}

fn check_headers(
    req: &RecordedRequest,
    hs: &BTreeMap<String, Matcher>,
    refs: &dyn RefResolver,
) -> Vec<String> {
    hs.iter()
        .filter_map(|(name, m)| {
            m.check(req.header(name).as_deref(), refs)
                .err()
                .map(|e| format!("{name}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests;
