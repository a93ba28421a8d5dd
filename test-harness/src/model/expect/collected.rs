//! A real collector's store (`real_collector:` scenarios): the built-in checks that it took and
//! kept every span, and the scenario's `collected:` expectations.

use super::counters::{find_metric, metric_value};
use super::spans::{count_per_trace, match_checks};
use super::{Check, Collected, IngestStats, Observations};
use crate::model::observed::AppReport;
use crate::model::scenario::{CollectedExpect, CountSpec, SpansExpect};
use crate::model::spans::{truncate, Span};
use std::collections::{BTreeMap, BTreeSet};

/// Spans the instrumented apps reported and the collector accepted (2xx).
pub fn app_reported(obs: &Observations) -> u64 {
    obs.upstreams
        .values()
        .flatten()
        .filter_map(|r| r.report.as_ref())
        .filter(|r| accepted(r))
        .count() as u64
}

/// The spans a real collector must hold: every span the Envoys exported, plus the apps' own.
pub fn expected_stored(obs: &Observations) -> u64 {
    obs.metrics
        .values()
        .map(|st| metric_value(st, "spans_exported"))
        .sum::<u64>()
        + app_reported(obs)
}

fn accepted(r: &AppReport) -> bool {
    r.status.as_ref().is_ok_and(|s| (200..300).contains(s))
}

/// Checks every real-collector scenario gets: the collector took every export and every app
/// report, dropped nothing, and stored every span with a timing inside the run.
pub(super) fn builtin_checks(c: &Collected, obs: &Observations, out: &mut Vec<Check>) {
    let kind = &c.kind;
    if let Some(e) = &c.error {
        out.push(Check::fail(
            format!("{kind}: query API read back"),
            e.clone(),
        ));
    }
    out.push(exports_accepted(kind, obs));
    if let Some(ch) = reports_accepted(kind, obs) {
        out.push(ch);
    }
    out.push(ingest_check(kind, &c.ingest));
    let want = expected_stored(obs);
    let got = c.spans.len() as u64;
    out.push(Check::new(
        got == want,
        format!(
            "built-in: {kind} stored every exported span (sum of spans_exported + {} app-reported = {want})",
            app_reported(obs)
        ),
        format!("stored {got} (polled {} ms)", c.waited_ms),
    ));
    if !c.spans.is_empty() {
        out.push(stored_timing(&c.spans, obs.window_us));
    }
}

/// Every export request was accepted, nothing dropped inside the filter.
fn exports_accepted(kind: &str, obs: &Observations) -> Check {
    let mut bad = Vec::new();
    for (envoy, st) in &obs.metrics {
        for k in ["export_requests_failed", "spans_dropped"] {
            match find_metric(st, k) {
                Some(0) => {}
                Some(n) => bad.push(format!("{envoy}: {k}={n}")),
                None => bad.push(format!("{envoy}: no counter meshtrace_{k}")),
            }
        }
    }
    Check::new(
        bad.is_empty(),
        format!("built-in: {kind} accepted every export request (export_requests_failed = spans_dropped = 0)"),
        bad.join("; "),
    )
}

/// The collector answered every span an app reported with 2xx; None when no app reported.
fn reports_accepted(kind: &str, obs: &Observations) -> Option<Check> {
    let reports: Vec<(&String, usize, &AppReport)> = obs
        .upstreams
        .iter()
        .flat_map(|(u, rs)| {
            rs.iter()
                .enumerate()
                .filter_map(move |(i, r)| r.report.as_ref().map(|rep| (u, i, rep)))
        })
        .collect();
    if reports.is_empty() {
        return None;
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|(_, _, r)| !accepted(r))
        .map(|(u, i, r)| format!("{u} #{i}: {:?}", r.status))
        .collect();
    Some(Check::new(
        bad.is_empty(),
        format!(
            "built-in: {kind} accepted the {} span(s) the apps reported",
            reports.len()
        ),
        bad.join("; "),
    ))
}

/// The collector's own counters show nothing dropped or refused.
fn ingest_check(kind: &str, ingest: &Result<IngestStats, String>) -> Check {
    let st = match ingest {
        Ok(st) => st,
        Err(e) => {
            return Check::fail(format!("built-in: {kind} self-metrics read"), e.clone());
        }
    };
    let nonzero: Vec<String> = st
        .dropped
        .iter()
        .filter(|(_, v)| *v != 0.0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let detail = if nonzero.is_empty() {
        let all: Vec<String> = st.dropped.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("accepted {}; {}", st.accepted, all.join(", "))
    } else {
        nonzero.join(", ")
    };
    Check::new(
        nonzero.is_empty(),
        format!("built-in: {kind} self-metrics show no dropped/refused spans"),
        detail,
    )
}

/// Every stored span has a timestamp and a positive duration, inside the run's window.
fn stored_timing(spans: &[Span], window_us: Option<(u64, u64)>) -> Check {
    let mut problems = Vec::new();
    for s in spans {
        match (s.timestamp_us(), s.duration_us()) {
            (Some(ts), Some(d)) if d > 0 => {
                if let Some((lo, hi)) = window_us {
                    if ts < lo || ts.saturating_add(d) > hi {
                        problems.push(format!(
                            "span {} ({}): timestamp {ts} + duration {d} µs outside the run [{lo}, {hi}]",
                            s.id(),
                            s.envoy
                        ));
                    }
                }
            }
            (ts, d) => problems.push(format!(
                "span {} ({}): timestamp {ts:?}, duration {d:?} (need both, duration > 0)",
                s.id(),
                s.envoy
            )),
        }
    }
    let n = problems.len();
    problems.truncate(6);
    Check::new(
        n == 0,
        format!(
            "built-in: all {} stored spans lie in the run, duration > 0",
            spans.len()
        ),
        if n == 0 {
            String::new()
        } else {
            format!("{n} problem(s): {}", problems.join("; "))
        },
    )
}

/// The scenario's `collected:` expectations on what the collector stored.
pub(super) fn collected_checks(
    ce: &CollectedExpect,
    c: &Collected,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    let kind = &c.kind;
    let per_trace = count_per_trace(&c.spans);
    if ce.empty {
        out.push(Check::new(
            c.spans.is_empty() && c.services.is_empty(),
            format!("{kind}: nothing stored"),
            format!("{} span(s), services {:?}", c.spans.len(), c.services),
        ));
    }
    if let Some(t) = &ce.traces {
        out.push(Check::new(
            t.accepts(per_trace.len() as u64),
            format!("{kind}: {t} trace(s) stored"),
            format!("got {}", per_trace.len()),
        ));
    }
    if let Some(n) = &ce.spans {
        let got = c.spans.len() as u64;
        out.push(Check::new(
            n.accepts(got),
            format!("{kind}: {n} span(s) stored"),
            format!("got {got}"),
        ));
    }
    if let Some(k) = &ce.per_trace {
        out.push(per_trace_check(kind, k, &per_trace));
    }
    if let Some(want) = &ce.services {
        let got: BTreeSet<String> = c.services.iter().cloned().collect();
        out.push(Check::new(
            &got == want,
            format!("{kind}: services = {want:?}"),
            format!("got {got:?}"),
        ));
    }
    if ce.nested {
        out.push(nested_check(kind, &c.spans));
    }
    if !ce.matchers.is_empty() {
        stored_match_checks(ce, c, obs, out);
    }
}

/// `per_trace`: every stored trace has `k` spans.
fn per_trace_check(kind: &str, k: &CountSpec, per_trace: &BTreeMap<String, u64>) -> Check {
    let bad: Vec<String> = per_trace
        .iter()
        .filter(|(_, n)| !k.accepts(**n))
        .take(5)
        .map(|(t, n)| format!("{t}: {n}"))
        .collect();
    Check::new(
        bad.is_empty() && !per_trace.is_empty(),
        format!("{kind}: every trace has {k} span(s)"),
        if per_trace.is_empty() {
            "no traces stored".to_string()
        } else {
            format!("{bad:?}")
        },
    )
}

/// `nested`: every child span lies within its parent, with 1 ms of slack for clock rounding.
fn nested_check(kind: &str, spans: &[Span]) -> Check {
    let mut bad = Vec::new();
    for s in spans {
        let Some(p) = s.parent_id() else { continue };
        let Some(parent) = spans
            .iter()
            .find(|q| q.id() == p && q.trace_id() == s.trace_id() && !std::ptr::eq(*q, s))
        else {
            continue;
        };
        if let (Some(cs), Some(cd), Some(ps), Some(pd)) = (
            s.timestamp_us(),
            s.duration_us(),
            parent.timestamp_us(),
            parent.duration_us(),
        ) {
            if cs < ps || cs + cd > ps + pd + 1000 {
                bad.push(format!(
                    "{} {} [{cs}, +{cd}] not within parent {} {} [{ps}, +{pd}]",
                    s.envoy,
                    s.id(),
                    parent.envoy,
                    parent.id()
                ));
            }
        }
    }
    Check::new(
        bad.is_empty() && !spans.is_empty(),
        format!("{kind}: every child span lies within its parent (+1 ms)"),
        if spans.is_empty() {
            "no spans stored".to_string()
        } else {
            truncate(&bad.join("; "), 600)
        },
    )
}

/// `match:` against the stored spans, labelled with the collector's kind.
fn stored_match_checks(
    ce: &CollectedExpect,
    c: &Collected,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    let mut sub = Vec::new();
    let sp = SpansExpect {
        matchers: ce.matchers.clone(),
        ..Default::default()
    };
    match_checks(&sp, &c.spans, obs, &mut sub);
    let prefix = format!("{} span match", c.kind);
    for ch in sub {
        out.push(Check {
            label: ch.label.replacen("span match", &prefix, 1),
            ..ch
        });
    }
}
