//! Evaluation of a scenario's `expect:` block against what was observed. Pure: no I/O.

use crate::model::matcher::{Matcher, RefResolver};
use crate::model::observed::{ExportPost, RecordedRequest};
use crate::model::scenario::{CollectedExpect, Expect, RequestSel, SpanMatcher, SpansExpect};
use crate::model::spans::{truncate, Span};
use std::collections::{BTreeMap, BTreeSet};

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
    /// The fake collector's fault mode, if it has one.
    pub collector_fault: Option<crate::model::scenario::CollectorFault>,
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

/// Sums every stat whose name ends with `meshtrace_<suffix>` (or, failing that, with `suffix`);
/// 0 when there is none.
pub fn metric_value(stats: &BTreeMap<String, u64>, suffix: &str) -> u64 {
    find_metric(stats, suffix).unwrap_or(0)
}

/// Like [`metric_value`], but `None` when no stat has that name: a counter the filter does not
/// define (or names differently) must not pass as 0.
pub fn find_metric(stats: &BTreeMap<String, u64>, suffix: &str) -> Option<u64> {
    let full = if suffix.starts_with("meshtrace_") {
        suffix.to_string()
    } else {
        format!("meshtrace_{suffix}")
    };
    let sum = |end: &str| {
        let v: Vec<u64> = stats
            .iter()
            .filter(|(k, _)| k.ends_with(end))
            .map(|(_, v)| *v)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    sum(&full).or_else(|| sum(suffix))
}

/// The value of the Prometheus sample `meshtrace_<suffix>{} N` and whether a
/// `# TYPE meshtrace_<suffix> counter` line declares it a counter.
pub fn prometheus_counter(text: &str, suffix: &str) -> (Option<u64>, bool) {
    let name = if suffix.starts_with("meshtrace_") {
        suffix.to_string()
    } else {
        format!("meshtrace_{suffix}")
    };
    let sample = format!("{name}{{}} ");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(sample.as_str()))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let typed = text
        .lines()
        .any(|l| l.trim_end() == format!("# TYPE {name} counter"));
    (value, typed)
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

pub fn evaluate(expect: &Expect, obs: &Observations) -> Vec<Check> {
    let mut out = Vec::new();
    builtin(obs, &mut out);
    no_crash(&expect.trapped, obs, &mut out);
    upstream_checks(expect, obs, &mut out);
    out.extend(crate::run::fault::fault_checks(
        expect.collector_requests.as_ref(),
        obs,
    ));
    if let Some(sp) = &expect.spans {
        span_checks(sp, obs, &mut out);
    }
    if let Some(c) = &obs.collected {
        collected_checks(expect.collected.as_ref(), c, obs, &mut out);
    }
    for (envoy, metrics) in &expect.metrics {
        let Some(stats) = obs.metrics.get(envoy) else {
            out.push(Check::fail(
                format!("metrics {envoy}"),
                "no stats were collected from this Envoy",
            ));
            continue;
        };
        for (suffix, want) in metrics {
            let (pass, detail) = match find_metric(stats, suffix) {
                Some(got) => (want.accepts(got), format!("got {got}")),
                None => (
                    false,
                    format!("no counter meshtrace_{suffix} in /stats (names: {})", {
                        let names: Vec<&str> = stats.keys().map(String::as_str).collect();
                        truncate(&names.join(", "), 300)
                    }),
                ),
            };
            out.push(Check::new(
                pass,
                format!("metric {envoy} {suffix} = {want}"),
                detail,
            ));
        }
    }
    for (envoy, metrics) in &expect.prometheus {
        let Some(text) = obs.prometheus.get(envoy) else {
            out.push(Check::fail(
                format!("prometheus {envoy}"),
                "/stats/prometheus was not read from this Envoy",
            ));
            continue;
        };
        for (suffix, want) in metrics {
            let name = suffix.trim_start_matches("meshtrace_");
            let (value, typed) = prometheus_counter(text, suffix);
            let pass = typed && value.is_some_and(|v| want.accepts(v));
            let detail = match value {
                Some(v) if typed => format!("got meshtrace_{name}{{}} {v}"),
                Some(v) => {
                    format!("meshtrace_{name}{{}} {v} but no `# TYPE meshtrace_{name} counter`")
                }
                None => {
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| l.contains("meshtrace"))
                        .take(8)
                        .collect();
                    format!(
                        "no line `meshtrace_{name}{{}} N`; meshtrace lines: {}",
                        truncate(&lines.join(" | "), 400)
                    )
                }
            };
            out.push(Check::new(
                pass,
                format!("prometheus {envoy} meshtrace_{name}{{}} = {want}"),
                detail,
            ));
        }
    }
    for (envoy, list) in &expect.envoy_stats {
        let stats = obs.all_stats.get(envoy);
        for st in list {
            let label = format!("envoy stat {envoy} /{}/ = {}", st.name_re, st.value);
            let (Some(stats), Ok(re)) = (stats, regex::Regex::new(&st.name_re)) else {
                out.push(Check::fail(
                    label,
                    "stats were not read (or the regex is bad)",
                ));
                continue;
            };
            let hits: Vec<(&String, &u64)> = stats.iter().filter(|(k, _)| re.is_match(k)).collect();
            let sum: u64 = hits.iter().map(|(_, v)| **v).sum();
            out.push(Check::new(
                !hits.is_empty() && st.value.accepts(sum),
                label,
                if hits.is_empty() {
                    "no stat matches".to_string()
                } else {
                    truncate(
                        &format!(
                            "sum {sum} of {}",
                            hits.iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        300,
                    )
                },
            ));
        }
    }
    for (envoy, le) in &expect.logs {
        let text = obs.logs.get(envoy).map(String::as_str).unwrap_or("");
        for s in &le.contains {
            out.push(Check::new(
                text.contains(s.as_str()),
                format!("log {envoy} contains {s:?}"),
                meshtrace_log_excerpt(text),
            ));
        }
        for pat in &le.matches {
            let found = regex::Regex::new(pat)
                .ok()
                .and_then(|re| text.lines().find(|l| re.is_match(l)));
            out.push(Check::new(
                found.is_some(),
                format!("log {envoy} has a line matching /{pat}/"),
                match found {
                    Some(l) => truncate(l, 300),
                    None => meshtrace_log_excerpt(text),
                },
            ));
        }
        for s in &le.not_contains {
            let line = text.lines().find(|l| l.contains(s.as_str()));
            out.push(Check::new(
                line.is_none(),
                format!("log {envoy} does not contain {s:?}"),
                line.map(|l| format!("found: {}", truncate(l, 300)))
                    .unwrap_or_default(),
            ));
        }
    }
    if let Some(ce) = &expect.collector_requests {
        let n = obs.posts.len() as u64;
        if let Some(min) = ce.min {
            out.push(Check::new(
                n >= min,
                format!("collector received >= {min} export request(s)"),
                format!("got {n}"),
            ));
        }
        if let Some(max) = ce.max {
            out.push(Check::new(
                n <= max,
                format!("collector received <= {max} export request(s)"),
                format!("got {n}"),
            ));
        }
        if let Some(maxs) = ce.max_spans_per_request {
            let sizes: Vec<usize> = obs
                .posts
                .iter()
                .map(|p| p.spans.as_ref().map_or(0, Vec::len))
                .collect();
            out.push(Check::new(
                !sizes.is_empty() && sizes.iter().all(|s| *s as u64 <= maxs),
                format!("every export request carries <= {maxs} spans"),
                format!("batch sizes {sizes:?}"),
            ));
        }
        if let Some(want) = &ce.spans_per_request {
            let sizes: Vec<usize> = obs
                .posts
                .iter()
                .map(|p| p.spans.as_ref().map_or(0, Vec::len))
                .collect();
            out.push(Check::new(
                !sizes.is_empty() && sizes.iter().all(|s| want.accepts(*s as u64)),
                format!("every export request carries {want} span(s)"),
                format!("batch sizes {sizes:?}"),
            ));
        }
        if let Some(want) = &ce.max_concurrent {
            let got = obs.collector_max_concurrent;
            out.push(Check::new(
                want.accepts(got),
                format!("most export requests open at once = {want}"),
                format!("got {got}"),
            ));
        }
        if let Some(pm) = &ce.path {
            let bad: Vec<String> = obs
                .posts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    pm.check(Some(&p.request.path), obs)
                        .err()
                        .map(|e| format!("#{i}: {e}"))
                })
                .collect();
            out.push(Check::new(
                bad.is_empty() && !obs.posts.is_empty(),
                format!("every export request path {pm}"),
                if obs.posts.is_empty() {
                    "no export requests were received".to_string()
                } else {
                    bad.join("; ")
                },
            ));
        }
        if !ce.headers.is_empty() {
            let mut bad = Vec::new();
            for (i, p) in obs.posts.iter().enumerate() {
                for e in check_headers(&p.request, &ce.headers, obs) {
                    bad.push(format!("#{i} (from {}): {e}", p.envoy));
                }
            }
            out.push(Check::new(
                bad.is_empty() && !obs.posts.is_empty(),
                format!(
                    "every export request has headers {}",
                    describe_headers(&ce.headers)
                ),
                if obs.posts.is_empty() {
                    "no export requests were received".to_string()
                } else {
                    truncate(&bad.join("; "), 600)
                },
            ));
        }
    }
    out
}

fn meshtrace_log_excerpt(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("meshtrace") || l.contains("[critical]") || l.contains("[error]"))
        .collect();
    let tail: Vec<&str> = lines.iter().rev().take(6).rev().copied().collect();
    if tail.is_empty() {
        format!(
            "({} log lines, none mention meshtrace/critical/error)",
            text.lines().count()
        )
    } else {
        format!(
            "relevant log lines:\n        {}",
            tail.iter()
                .map(|l| truncate(l, 300))
                .collect::<Vec<_>>()
                .join("\n        ")
        )
    }
}

fn builtin(obs: &Observations, out: &mut Vec<Check>) {
    let bad_bodies: Vec<String> = obs
        .posts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.spans
                .as_ref()
                .err()
                .map(|e| format!("export #{i} from {}: {e}", p.envoy))
        })
        .collect();
    if !bad_bodies.is_empty() {
        out.push(Check::fail(
            "collector bodies are JSON span arrays",
            bad_bodies.join("; "),
        ));
    }
    let mut problems = Vec::new();
    for s in &obs.spans {
        for p in s.shape_problems() {
            problems.push(format!("span {} from {}: {p}", s.id(), s.envoy));
        }
        // Microseconds from the proxy's clock: the span lies inside the run (a unit mistake —
        // ms or ns — lands far outside it).
        if let (Some((lo, hi)), Some(ts), Some(d)) =
            (obs.window_us, s.timestamp_us(), s.duration_us())
        {
            if ts < lo || ts.saturating_add(d) > hi {
                problems.push(format!(
                    "span {} from {}: timestamp {ts} + duration {d} µs is outside the run [{lo}, {hi}]",
                    s.id(),
                    s.envoy
                ));
            }
        }
    }
    if !obs.spans.is_empty() || !problems.is_empty() {
        let n = problems.len();
        problems.truncate(8);
        out.push(Check::new(
            n == 0,
            format!(
                "built-in: all {} spans have valid ids, timestamp/duration in µs within the run, kind SERVER|CLIENT",
                obs.spans.len()
            ),
            if n == 0 {
                String::new()
            } else {
                format!("{n} problem(s): {}", problems.join("; "))
            },
        ));
    }
}

/// Lines that show the filter crashed (a Rust panic, or a wasm trap in a proxy-wasm callback).
const CRASH_MARKERS: [&str; 2] = ["meshtrace: panic", "failed: Uncaught"];

fn no_crash(trapped: &[String], obs: &Observations, out: &mut Vec<Check>) {
    for (envoy, text) in &obs.logs {
        let line = text
            .lines()
            .find(|l| CRASH_MARKERS.iter().any(|m| l.contains(m)));
        let (ok, what) = if trapped.contains(envoy) {
            (line.is_some(), "shows the wasm trap it must have")
        } else {
            (line.is_none(), "shows no panic or wasm trap")
        };
        out.push(Check::new(
            ok,
            format!("built-in: envoy {envoy} log {what}"),
            line.map(|l| truncate(l, 300)).unwrap_or_default(),
        ));
    }
}

fn upstream_checks(expect: &Expect, obs: &Observations, out: &mut Vec<Check>) {
    let empty = Vec::new();
    for (up, names) in &expect.upstream_unique {
        let reqs = obs.upstreams.get(up).unwrap_or(&empty);
        for name in &names.0 {
            let values: Vec<Option<String>> = reqs.iter().map(|r| r.header(name)).collect();
            let missing = values.iter().filter(|v| v.is_none()).count();
            let distinct: BTreeSet<&String> = values.iter().flatten().collect();
            let dups = values.len() - missing - distinct.len();
            out.push(Check::new(
                !reqs.is_empty() && missing == 0 && dups == 0,
                format!("upstream {up}: every request has its own {name}"),
                format!(
                    "{} request(s), {missing} without it, {dups} repeated value(s)",
                    reqs.len()
                ),
            ));
        }
    }
    for (up, want) in &expect.upstream_requests {
        let n = obs.upstreams.get(up).map_or(0, Vec::len) as u64;
        out.push(Check::new(
            want.accepts(n),
            format!("upstream {up} received {want} request(s)"),
            format!("got {n}"),
        ));
    }
    for (up, entries) in &expect.upstream_headers {
        let reqs = obs.upstreams.get(up).unwrap_or(&empty);
        for e in entries {
            let label = format!(
                "upstream {up} request {}: {}",
                e.request,
                describe_headers(&e.headers)
            );
            let indices: Vec<usize> = match &e.request {
                RequestSel::All => (0..reqs.len()).collect(),
                RequestSel::Index(i) => vec![*i],
                RequestSel::List(l) => l.clone(),
            };
            if let Some(i) = indices.iter().find(|i| **i >= reqs.len()) {
                out.push(Check::fail(
                    label,
                    format!(
                        "upstream {up} received only {} request(s) (no #{i})",
                        reqs.len()
                    ),
                ));
                continue;
            }
            let selected: Vec<(usize, &RecordedRequest)> =
                indices.iter().map(|&i| (i, &reqs[i])).collect();
            if selected.is_empty() {
                out.push(Check::fail(
                    label,
                    format!("upstream {up} received no requests"),
                ));
                continue;
            }
            let mut failures = Vec::new();
            for (i, r) in &selected {
                let errs = check_headers(r, &e.headers, obs);
                if !errs.is_empty() {
                    failures.push(format!("#{i} {} {}: {}", r.method, r.path, errs.join("; ")));
                }
            }
            let detail = if failures.is_empty() {
                String::new()
            } else {
                let n = failures.len();
                failures.truncate(4);
                format!(
                    "{n} of {} request(s) failed: {}",
                    selected.len(),
                    failures.join(" | ")
                )
            };
            out.push(Check::new(failures.is_empty(), label, detail));
        }
    }
    for (up, [lo, hi]) in &expect.upstream_sampled_between {
        let reqs = obs.upstreams.get(up).unwrap_or(&empty);
        let n = reqs.iter().filter(|r| r.sampled()).count() as u64;
        out.push(Check::new(
            *lo <= n && n <= *hi,
            format!("upstream {up}: requests with sampled=1 in [{lo}, {hi}]"),
            format!("got {n} of {}", reqs.len()),
        ));
    }
    for up in &expect.sampled_matches_spans.0 {
        let reqs = obs.upstreams.get(up).unwrap_or(&empty);
        let seen: BTreeSet<String> = reqs
            .iter()
            .filter(|r| r.sampled())
            .filter_map(|r| r.header("x-b3-spanid"))
            .collect();
        let envoys: BTreeSet<&String> = obs
            .envoy_upstream
            .iter()
            .filter(|(_, u)| u.as_deref() == Some(up.as_str()))
            .map(|(e, _)| e)
            .collect();
        let ids: BTreeSet<String> = obs
            .spans
            .iter()
            .filter(|s| envoys.contains(&s.envoy))
            .map(|s| s.id())
            .collect();
        let only_up: Vec<&String> = seen.difference(&ids).take(5).collect();
        let only_spans: Vec<&String> = ids.difference(&seen).take(5).collect();
        out.push(Check::new(
            seen == ids,
            format!(
                "upstream {up}: sampled x-b3-spanid set == span ids exported by {envoys:?}"
            ),
            format!(
                "{} sampled at upstream, {} spans; only at upstream: {only_up:?}; only in spans: {only_spans:?}",
                seen.len(),
                ids.len()
            ),
        ));
    }
}

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
fn span_field_errors(m: &SpanMatcher, s: &Span, refs: &dyn RefResolver) -> Vec<String> {
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

fn describe_span_matcher(i: usize, m: &SpanMatcher) -> String {
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

fn span_checks(sp: &SpansExpect, obs: &Observations, out: &mut Vec<Check>) {
    let spans = &obs.spans;
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
    let mut per_trace: BTreeMap<String, u64> = BTreeMap::new();
    for s in spans {
        *per_trace.entry(s.trace_id()).or_default() += 1;
    }
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
    for (envoy, want) in &sp.per_envoy {
        let got = spans.iter().filter(|s| &s.envoy == envoy).count() as u64;
        out.push(Check::new(
            want.accepts(got),
            format!("spans exported by {envoy} = {want}"),
            format!("got {got}"),
        ));
    }
    if !sp.all_tags.is_empty() {
        let mut bad = Vec::new();
        for s in spans {
            for (k, m) in &sp.all_tags {
                if let Err(e) = m.check(s.tag(k).as_deref(), obs) {
                    bad.push(format!("span {}: tags.{k}: {e}", s.id()));
                }
            }
        }
        let nb = bad.len();
        bad.truncate(5);
        out.push(Check::new(
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
        ));
    }
    if let Some(every) = &sp.every {
        let bad: Vec<String> = spans
            .iter()
            .filter_map(|s| {
                let errs = span_field_errors(every, s, obs);
                (!errs.is_empty())
                    .then(|| format!("span {} [{}]: {}", s.id(), s.envoy, errs.join("; ")))
            })
            .collect();
        out.push(Check::new(
            bad.is_empty() && !spans.is_empty(),
            describe_span_matcher(0, every).replacen("span match[0]", "every span", 1),
            if spans.is_empty() {
                "no spans were collected".to_string()
            } else if bad.is_empty() {
                format!("{} span(s)", spans.len())
            } else {
                format!(
                    "{} mismatch(es): {}",
                    bad.len(),
                    truncate(
                        &bad.iter().take(4).cloned().collect::<Vec<_>>().join(" | "),
                        600
                    )
                )
            },
        ));
    }
    match_checks(sp, spans, obs, out);
}

/// `match:` of a span expectation against `spans` (refs resolve through `refs`).
fn match_checks(sp: &SpansExpect, spans: &[Span], refs: &dyn RefResolver, out: &mut Vec<Check>) {
    let obs = refs;
    if sp.matchers.is_empty() {
        return;
    }
    let (cands, assignment) = assign_spans(&sp.matchers, spans, obs);
    match assignment {
        Some(a) => {
            for (i, m) in sp.matchers.iter().enumerate() {
                let s = &spans[a[i]];
                out.push(Check::pass(
                    describe_span_matcher(i, m),
                    format!("span {} [{}]", s.id(), s.envoy),
                ));
            }
        }
        None => {
            let any_empty = cands.iter().any(Vec::is_empty);
            for (i, m) in sp.matchers.iter().enumerate() {
                let label = describe_span_matcher(i, m);
                if cands[i].is_empty() {
                    out.push(Check::fail(label, closest_mismatch(m, spans, obs)));
                } else if any_empty {
                    out.push(Check::pass(
                        label,
                        format!("{} candidate span(s)", cands[i].len()),
                    ));
                } else {
                    out.push(Check::fail(
                        label,
                        format!(
                            "{} candidate span(s) {:?}, but no assignment of distinct spans satisfies all matchers and parent links",
                            cands[i].len(),
                            cands[i].iter().take(6).map(|&j| spans[j].id()).collect::<Vec<_>>()
                        ),
                    ));
                }
            }
        }
    }
}

/// Spans the instrumented apps reported and the collector accepted (2xx).
pub fn app_reported(obs: &Observations) -> u64 {
    obs.upstreams
        .values()
        .flatten()
        .filter_map(|r| r.report.as_ref())
        .filter(|r| r.status.as_ref().is_ok_and(|s| (200..300).contains(s)))
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

fn collected_checks(
    ce: Option<&CollectedExpect>,
    c: &Collected,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    let kind = &c.kind;
    if let Some(e) = &c.error {
        out.push(Check::fail(
            format!("{kind}: query API read back"),
            e.clone(),
        ));
    }
    // Every export request was accepted, nothing dropped inside the filter.
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
    out.push(Check::new(
        bad.is_empty(),
        format!("built-in: {kind} accepted every export request (export_requests_failed = spans_dropped = 0)"),
        bad.join("; "),
    ));
    let reports: Vec<(String, usize, &crate::model::observed::AppReport)> = obs
        .upstreams
        .iter()
        .flat_map(|(u, rs)| {
            rs.iter()
                .enumerate()
                .filter_map(move |(i, r)| r.report.as_ref().map(|rep| (u.clone(), i, rep)))
        })
        .collect();
    if !reports.is_empty() {
        let bad: Vec<String> = reports
            .iter()
            .filter(|(_, _, r)| !r.status.as_ref().is_ok_and(|s| (200..300).contains(s)))
            .map(|(u, i, r)| format!("{u} #{i}: {:?}", r.status))
            .collect();
        out.push(Check::new(
            bad.is_empty(),
            format!(
                "built-in: {kind} accepted the {} span(s) the apps reported",
                reports.len()
            ),
            bad.join("; "),
        ));
    }
    match &c.ingest {
        Ok(st) => {
            let nonzero: Vec<String> = st
                .dropped
                .iter()
                .filter(|(_, v)| *v != 0.0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push(Check::new(
                nonzero.is_empty(),
                format!("built-in: {kind} self-metrics show no dropped/refused spans"),
                if nonzero.is_empty() {
                    format!(
                        "accepted {}; {}",
                        st.accepted,
                        st.dropped
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    nonzero.join(", ")
                },
            ));
        }
        Err(e) => out.push(Check::fail(
            format!("built-in: {kind} self-metrics read"),
            e.clone(),
        )),
    }
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
    let mut problems = Vec::new();
    for s in &c.spans {
        match (s.timestamp_us(), s.duration_us()) {
            (Some(ts), Some(d)) if d > 0 => {
                if let Some((lo, hi)) = obs.window_us {
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
    if !c.spans.is_empty() {
        let n = problems.len();
        problems.truncate(6);
        out.push(Check::new(
            n == 0,
            format!(
                "built-in: all {} stored spans lie in the run, duration > 0",
                c.spans.len()
            ),
            if n == 0 {
                String::new()
            } else {
                format!("{n} problem(s): {}", problems.join("; "))
            },
        ));
    }
    let Some(ce) = ce else { return };
    let mut per_trace: BTreeMap<String, u64> = BTreeMap::new();
    for s in &c.spans {
        *per_trace.entry(s.trace_id()).or_default() += 1;
    }
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
        out.push(Check::new(
            n.accepts(got),
            format!("{kind}: {n} span(s) stored"),
            format!("got {got}"),
        ));
    }
    if let Some(k) = &ce.per_trace {
        let bad: Vec<String> = per_trace
            .iter()
            .filter(|(_, n)| !k.accepts(**n))
            .take(5)
            .map(|(t, n)| format!("{t}: {n}"))
            .collect();
        out.push(Check::new(
            bad.is_empty() && !per_trace.is_empty(),
            format!("{kind}: every trace has {k} span(s)"),
            if per_trace.is_empty() {
                "no traces stored".to_string()
            } else {
                format!("{bad:?}")
            },
        ));
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
        let mut bad = Vec::new();
        for s in &c.spans {
            let Some(p) = s.parent_id() else { continue };
            let Some(parent) = c
                .spans
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
        out.push(Check::new(
            bad.is_empty() && !c.spans.is_empty(),
            format!("{kind}: every child span lies within its parent (+1 ms)"),
            if c.spans.is_empty() {
                "no spans stored".to_string()
            } else {
                truncate(&bad.join("; "), 600)
            },
        ));
    }
    if !ce.matchers.is_empty() {
        let mut sub = Vec::new();
        let sp = SpansExpect {
            matchers: ce.matchers.clone(),
            ..Default::default()
        };
        match_checks(&sp, &c.spans, obs, &mut sub);
        for ch in sub {
            out.push(Check {
                label: ch
                    .label
                    .replacen("span match", &format!("{kind} span match"), 1),
                ..ch
            });
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

#[cfg(test)]
mod tests {
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
}
