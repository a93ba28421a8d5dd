//! Span matchers against spans: field checks, and the search for distinct spans that satisfy a
//! whole `match:` list with its `parent` links.

use crate::model::matcher::{Matcher, RefResolver};
use crate::model::scenario::SpanMatcher;
use crate::model::spans::{truncate, Span};

/// The span fields a matcher can name, with the names reports use.
fn named_fields(m: &SpanMatcher) -> [(&'static str, &Option<Matcher>); 8] {
    [
        ("traceId", &m.trace_id),
        ("id", &m.id),
        ("parentId", &m.parent_id),
        ("kind", &m.kind),
        ("name", &m.name),
        ("serviceName", &m.service_name),
        ("debug", &m.debug),
        ("envoy", &m.envoy),
    ]
}

/// Field-level check of one span against one matcher (no parent links).
pub(super) fn span_field_errors(m: &SpanMatcher, s: &Span, refs: &dyn RefResolver) -> Vec<String> {
    let mut errs = Vec::new();
    for (f, mm) in named_fields(m) {
        if let Some(mm) = mm {
            if let Err(e) = mm.check(s.field(f).as_deref(), refs) {
                errs.push(format!("{f}: {e}"));
            }
        }
    }
    for (k, mm) in &m.tags {
        if let Err(e) = mm.check(s.tag(k).as_deref(), refs) {
            errs.push(format!("tags.{k}: {e}"));
        }
    }
    for (k, mm) in &m.fields {
        if let Err(e) = mm.check(s.path(k).as_deref(), refs) {
            errs.push(format!("{k}: {e}"));
        }
    }
    if let Some(min) = m.duration_min_us {
        match s.duration_us() {
            Some(d) if d >= min => {}
            other => errs.push(format!("duration: expected >= {min}µs, got {other:?}")),
        }
    }
    errs
}

pub(super) fn describe_span_matcher(i: usize, m: &SpanMatcher) -> String {
    let mut parts = Vec::new();
    for (f, mm) in named_fields(m) {
        if let Some(mm) = mm {
            parts.push(format!("{f}={mm}"));
        }
    }
    for (k, mm) in m.tags.iter().chain(m.fields.iter()) {
        parts.push(format!("{k}={mm}"));
    }
    if let Some(p) = m.parent {
        parts.push(format!("parent=match[{p}]"));
    }
    if let Some(d) = m.duration_min_us {
        parts.push(format!("duration>={d}µs"));
    }
    let note = m
        .note
        .as_ref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!(
        "span match[{i}]{note}: {}",
        truncate(&parts.join(", "), 200)
    )
}

fn linked(child: &Span, parent: &Span) -> bool {
    child.parent_id().as_deref() == Some(parent.id().as_str())
        && child.trace_id() == parent.trace_id()
}

fn consistent(
    ms: &[SpanMatcher],
    spans: &[Span],
    assign: &[Option<usize>],
    i: usize,
    j: usize,
) -> bool {
    if let Some(p) = ms[i].parent {
        if let Some(pj) = assign[p] {
            if !linked(&spans[j], &spans[pj]) {
                return false;
            }
        }
    }
    for (k, mk) in ms.iter().enumerate() {
        if mk.parent == Some(i) {
            if let Some(kj) = assign[k] {
                if !linked(&spans[kj], &spans[j]) {
                    return false;
                }
            }
        }
    }
    true
}

struct Search<'a> {
    ms: &'a [SpanMatcher],
    spans: &'a [Span],
    cands: &'a [Vec<usize>],
    order: Vec<usize>,
    assign: Vec<Option<usize>>,
    used: Vec<bool>,
    budget: u64,
}

impl Search<'_> {
    fn run(&mut self, pos: usize) -> bool {
        if pos == self.order.len() {
            return true;
        }
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        let i = self.order[pos];
        for &j in &self.cands[i] {
            if self.used[j] || !consistent(self.ms, self.spans, &self.assign, i, j) {
                continue;
            }
            self.assign[i] = Some(j);
            self.used[j] = true;
            if self.run(pos + 1) {
                return true;
            }
            self.assign[i] = None;
            self.used[j] = false;
        }
        false
    }
}

/// Finds an injective assignment of matchers to spans honouring `parent` links.
pub fn assign_spans(
    ms: &[SpanMatcher],
    spans: &[Span],
    refs: &dyn RefResolver,
) -> (Vec<Vec<usize>>, Option<Vec<usize>>) {
    let cands: Vec<Vec<usize>> = ms
        .iter()
        .map(|m| {
            spans
                .iter()
                .enumerate()
                .filter(|(_, s)| span_field_errors(m, s, refs).is_empty())
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    if cands.iter().any(Vec::is_empty) {
        return (cands, None);
    }
    // Most constrained first.
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by_key(|&i| cands[i].len());
    let mut search = Search {
        ms,
        spans,
        cands: &cands,
        order,
        assign: vec![None; ms.len()],
        used: vec![false; spans.len()],
        budget: 200_000,
    };
    let result = if search.run(0) {
        Some(
            search
                .assign
                .iter()
                .map(|a| a.unwrap_or_default())
                .collect(),
        )
    } else {
        None
    };
    (cands, result)
}
