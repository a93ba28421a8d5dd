//! `spans:`: the spans the fake collector received — counts, per-trace and per-Envoy shape, tags
//! on every span, and `match:` lists.

use super::assign::{assign_spans, describe_span_matcher, span_field_errors};
use super::{describe_headers, Check, Observations};
use crate::model::matcher::RefResolver;
use crate::model::scenario::{SpanMatcher, SpansExpect};
use crate::model::spans::{truncate, Span};
use std::collections::BTreeMap;

pub(super) fn span_checks(sp: &SpansExpect, obs: &Observations, out: &mut Vec<Check>) {
    let spans = &obs.spans;
    count_checks(sp, spans, out);
    for (envoy, want) in &sp.per_envoy {
        let got = spans.iter().filter(|s| &s.envoy == envoy).count() as u64;
        out.push(Check::new(
            want.accepts(got),
            format!("spans exported by {envoy} = {want}"),
            format!("got {got}"),
        ));
    }
    if !sp.all_tags.is_empty() {
        out.push(all_tags_check(sp, spans, obs));
    }
    if let Some(every) = &sp.every {
        out.push(every_check(every, spans, obs));
    }
    match_checks(sp, spans, obs, out);
}

/// `count`, `count_between`, `traces` and `per_trace`.
fn count_checks(sp: &SpansExpect, spans: &[Span], out: &mut Vec<Check>) {
    let n = spans.len() as u64;
    if let Some(c) = sp.count {
        out.push(Check::new(
            n == c,
            format!("spans: count = {c}"),
            format!("got {n}"),
        ));
    }
    if let Some([lo, hi]) = sp.count_between {
        out.push(Check::new(
            lo <= n && n <= hi,
            format!("spans: count in [{lo}, {hi}]"),
            format!("got {n}"),
        ));
    }
    let per_trace = count_per_trace(spans);
    if let Some(t) = sp.traces {
        out.push(Check::new(
            per_trace.len() as u64 == t,
            format!("spans: {t} distinct trace(s)"),
            format!("got {}", per_trace.len()),
        ));
    }
    if let Some(k) = sp.per_trace {
        let bad: Vec<String> = per_trace
            .iter()
            .filter(|(_, c)| **c != k)
            .take(5)
            .map(|(t, c)| format!("{t}: {c}"))
            .collect();
        let nbad = per_trace.values().filter(|c| **c != k).count();
        out.push(Check::new(
            nbad == 0,
            format!("spans: every trace has exactly {k} span(s)"),
            format!("{nbad} of {} traces differ, e.g. {bad:?}", per_trace.len()),
        ));
    }
}

/// Trace id → number of spans in it.
pub(super) fn count_per_trace(spans: &[Span]) -> BTreeMap<String, u64> {
    let mut per_trace: BTreeMap<String, u64> = BTreeMap::new();
    for s in spans {
        *per_trace.entry(s.trace_id()).or_default() += 1;
    }
    per_trace
}

/// `all_tags`: every span carries these tags.
fn all_tags_check(sp: &SpansExpect, spans: &[Span], refs: &dyn RefResolver) -> Check {
    let mut bad = Vec::new();
    for s in spans {
        for (k, m) in &sp.all_tags {
            if let Err(e) = m.check(s.tag(k).as_deref(), refs) {
                bad.push(format!("span {}: tags.{k}: {e}", s.id()));
            }
        }
    }
    let nb = bad.len();
    bad.truncate(5);
    Check::new(
        nb == 0 && !spans.is_empty(),
        format!(
            "spans: every span has tags {}",
            describe_headers(&sp.all_tags)
        ),
        if spans.is_empty() {
            "no spans were collected".to_string()
        } else {
            format!("{nb} mismatch(es): {}", bad.join("; "))
        },
    )
}

/// `every`: one matcher every span satisfies.
fn every_check(every: &SpanMatcher, spans: &[Span], refs: &dyn RefResolver) -> Check {
    let bad: Vec<String> = spans
        .iter()
        .filter_map(|s| {
            let errs = span_field_errors(every, s, refs);
            (!errs.is_empty())
                .then(|| format!("span {} [{}]: {}", s.id(), s.envoy, errs.join("; ")))
        })
        .collect();
    let detail = if spans.is_empty() {
        "no spans were collected".to_string()
    } else if bad.is_empty() {
        format!("{} span(s)", spans.len())
    } else {
        let shown: Vec<String> = bad.iter().take(4).cloned().collect();
        format!(
            "{} mismatch(es): {}",
            bad.len(),
            truncate(&shown.join(" | "), 600)
        )
    };
    Check::new(
        bad.is_empty() && !spans.is_empty(),
        describe_span_matcher(0, every).replacen("span match[0]", "every span", 1),
        detail,
    )
}

/// `match:` of a span expectation against `spans` (refs resolve through `refs`).
pub(super) fn match_checks(
    sp: &SpansExpect,
    spans: &[Span],
    refs: &dyn RefResolver,
    out: &mut Vec<Check>,
) {
    if sp.matchers.is_empty() {
        return;
    }
    let (cands, assignment) = assign_spans(&sp.matchers, spans, refs);
    if let Some(a) = assignment {
        for (i, m) in sp.matchers.iter().enumerate() {
            let s = &spans[a[i]];
            out.push(Check::pass(
                describe_span_matcher(i, m),
                format!("span {} [{}]", s.id(), s.envoy),
            ));
        }
        return;
    }
    // When some matcher has no candidate at all, that one is the failure to show; the others
    // could not be judged.
    let any_empty = cands.iter().any(Vec::is_empty);
    for (i, m) in sp.matchers.iter().enumerate() {
        let label = describe_span_matcher(i, m);
        if cands[i].is_empty() {
            out.push(Check::fail(label, closest_mismatch(m, spans, refs)));
        } else if any_empty {
            out.push(Check::pass(
                label,
                format!("{} candidate span(s)", cands[i].len()),
            ));
        } else {
            let ids: Vec<String> = cands[i].iter().take(6).map(|&j| spans[j].id()).collect();
            out.push(Check::fail(
                label,
                format!(
                    "{} candidate span(s) {ids:?}, but no assignment of distinct spans satisfies all matchers and parent links",
                    cands[i].len(),
                ),
            ));
        }
    }
}

fn closest_mismatch(m: &SpanMatcher, spans: &[Span], refs: &dyn RefResolver) -> String {
    if spans.is_empty() {
        return "no spans were collected".to_string();
    }
    let best = spans
        .iter()
        .map(|s| (span_field_errors(m, s, refs), s))
        .min_by_key(|(e, _)| e.len());
    match best {
        Some((errs, s)) => format!(
            "no span matches; closest is {} ({}): {}",
            s.id(),
            truncate(&s.summary(), 160),
            errs.join("; ")
        ),
        None => "no spans".to_string(),
    }
}
