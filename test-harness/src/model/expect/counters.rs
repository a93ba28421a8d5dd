//! The Envoys' counters: the filter's own (`metrics:`, `prometheus:`) and any Envoy stat
//! (`envoy_stats:`).

use super::{Check, Observations};
use crate::model::scenario::{CountSpec, StatExpect};
use crate::model::spans::truncate;
use std::collections::BTreeMap;

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

/// `metrics:`: the filter's counters in `/stats`, by suffix.
pub(super) fn metric_checks(
    expect: &BTreeMap<String, BTreeMap<String, CountSpec>>,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    for (envoy, metrics) in expect {
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
}

/// `prometheus:`: the filter's counters in `/stats/prometheus`, typed as counters.
pub(super) fn prometheus_checks(
    expect: &BTreeMap<String, BTreeMap<String, CountSpec>>,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    for (envoy, metrics) in expect {
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
            out.push(Check::new(
                typed && value.is_some_and(|v| want.accepts(v)),
                format!("prometheus {envoy} meshtrace_{name}{{}} = {want}"),
                describe_prometheus(text, name, value, typed),
            ));
        }
    }
}

fn describe_prometheus(text: &str, name: &str, value: Option<u64>, typed: bool) -> String {
    match value {
        Some(v) if typed => format!("got meshtrace_{name}{{}} {v}"),
        Some(v) => format!("meshtrace_{name}{{}} {v} but no `# TYPE meshtrace_{name} counter`"),
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
    }
}

/// `envoy_stats:`: the sum of every Envoy stat whose name matches a regex.
pub(super) fn envoy_stat_checks(
    expect: &BTreeMap<String, Vec<StatExpect>>,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    for (envoy, list) in expect {
        let stats = obs.all_stats.get(envoy);
        for st in list {
            let label = format!("envoy stat {envoy} /{}/ = {}", st.name_re, st.value);
            let Some(stats) = stats else {
                out.push(Check::fail(label, "stats were not read"));
                continue;
            };
            let hits: Vec<(&String, &u64)> = stats
                .iter()
                .filter(|(k, _)| st.name_re.is_match(k))
                .collect();
            let sum: u64 = hits.iter().map(|(_, v)| **v).sum();
            let detail = if hits.is_empty() {
                "no stat matches".to_string()
            } else {
                let each: Vec<String> = hits.iter().map(|(k, v)| format!("{k}={v}")).collect();
                truncate(&format!("sum {sum} of {}", each.join(", ")), 300)
            };
            out.push(Check::new(
                !hits.is_empty() && st.value.accepts(sum),
                label,
                detail,
            ));
        }
    }
}
