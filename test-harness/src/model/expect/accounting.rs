//! The built-in accounting of every scenario with the fake collector: what each Envoy counts as
//! exported is exactly what the collector acknowledged, and nothing acknowledged was sent twice.

use super::counters::find_metric;
use super::{Check, Observations};
use crate::model::observed::ExportPost;
use std::collections::{BTreeMap, BTreeSet};

/// Per Envoy, after quiescence: `spans_exported` == the spans in the export requests the collector
/// acknowledged (a complete 2xx answer Envoy still waited for), and no span (trace id, span id)
/// in two acknowledged requests. A span counted exported that the collector never acknowledged,
/// or an acknowledged one not counted, is a bug; so is a batch sent again after its 2xx.
pub(super) fn accounting_checks(obs: &Observations, out: &mut Vec<Check>) {
    if !obs.fake_collector {
        return;
    }
    let mut by_envoy: BTreeMap<&str, Vec<&ExportPost>> = BTreeMap::new();
    for p in &obs.posts {
        by_envoy.entry(p.envoy.as_str()).or_default().push(p);
    }
    let envoys: BTreeSet<&str> = obs
        .metrics
        .keys()
        .map(String::as_str)
        .chain(by_envoy.keys().copied())
        .collect();
    for envoy in envoys {
        let posts = by_envoy.get(envoy).map(Vec::as_slice).unwrap_or(&[]);
        let exported = obs
            .metrics
            .get(envoy)
            .and_then(|st| find_metric(st, "spans_exported"));
        if exported.is_none() && posts.is_empty() {
            // No meshtrace counters and nothing sent (another module, e.g. the trap fixture).
            continue;
        }
        out.push(exported_check(envoy, exported, posts));
        out.push(duplicates_check(envoy, posts));
    }
}

fn exported_check(envoy: &str, exported: Option<u64>, posts: &[&ExportPost]) -> Check {
    let acked: Vec<&&ExportPost> = posts.iter().filter(|p| p.acknowledged()).collect();
    let acked_spans: u64 = acked.iter().map(|p| p.span_count()).sum();
    let label = format!(
        "built-in: envoy {envoy} spans_exported == spans in the export requests the collector \
         acknowledged (complete 2xx)"
    );
    let Some(exported) = exported else {
        return Check::fail(
            label,
            format!(
                "no counter meshtrace_spans_exported; {acked_spans} spans acknowledged in {} \
                 export requests",
                acked.len()
            ),
        );
    };
    Check::new(
        exported == acked_spans,
        label,
        format!(
            "acknowledged {acked_spans} spans in {} of {} export requests ({}); spans_exported \
             {exported}",
            acked.len(),
            posts.len(),
            unacknowledged(posts)
        ),
    )
}

/// Why the other export requests were not acknowledged, e.g. `12 answered 503, 3 unanswered`.
fn unacknowledged(posts: &[&ExportPost]) -> String {
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for p in posts.iter().filter(|p| !p.acknowledged()) {
        let reason = match (p.fault, p.answered_ms) {
            (Some(f), _) => f.name().to_string(),
            (None, Some(_)) => format!("answered {}", p.status),
            (None, None) => format!("with {} unanswered: the connection closed first", p.status),
        };
        *why.entry(reason).or_default() += 1;
    }
    if posts.is_empty() {
        return "none received".to_string();
    }
    if why.is_empty() {
        return "all acknowledged".to_string();
    }
    why.iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn duplicates_check(envoy: &str, posts: &[&ExportPost]) -> Check {
    // (trace id, span id) → the acknowledged request it first came in.
    let mut first: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut dups = Vec::new();
    for (i, p) in posts.iter().enumerate().filter(|(_, p)| p.acknowledged()) {
        for s in p.spans.iter().flatten() {
            let field = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let key = (field("traceId"), field("id"));
            match first.get(&key) {
                Some(&j) if j != i => dups.push(format!(
                    "span {}/{} in acknowledged requests #{j} and #{i}",
                    key.0, key.1
                )),
                Some(_) => {}
                None => {
                    first.insert(key, i);
                }
            }
        }
    }
    let n = dups.len();
    dups.truncate(5);
    Check::new(
        n == 0,
        format!("built-in: envoy {envoy}: no span in two acknowledged export requests"),
        if n == 0 {
            format!("{} distinct spans acknowledged", first.len())
        } else {
            format!("{n} span(s) acknowledged twice: {}", dups.join("; "))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observed::RecordedRequest;
    use crate::model::scenario::CollectorFault;
    use serde_json::json;

    fn post(envoy: &str, ids: &[&str], status: u16, answered: bool) -> ExportPost {
        ExportPost {
            envoy: envoy.into(),
            request: RecordedRequest::default(),
            spans: Ok(ids
                .iter()
                .map(|i| json!({"traceId": "t", "id": i}))
                .collect()),
            fault: None,
            status,
            retry_after: None,
            faulted: false,
            received_ms: 0,
            answered_ms: answered.then_some(1),
        }
    }

    fn obs(posts: Vec<ExportPost>, exported: &[(&str, u64)]) -> Observations {
        let mut o = Observations {
            posts,
            fake_collector: true,
            ..Default::default()
        };
        for (e, n) in exported {
            o.metrics.insert(
                e.to_string(),
                [("wasmcustom.meshtrace_spans_exported".to_string(), *n)].into(),
            );
        }
        o
    }

    fn run(o: &Observations) -> Vec<Check> {
        let mut out = Vec::new();
        accounting_checks(o, &mut out);
        out
    }

    #[test]
    fn exported_must_equal_acknowledged_per_envoy() {
        let mut broken = post("gw", &["c"], 202, false);
        broken.fault = Some(CollectorFault::CloseMidBody);
        let posts = vec![
            post("gw", &["a", "b"], 202, true),
            broken,
            post("gw", &["d"], 503, true),
            post("gw", &["e"], 202, false), // written after Envoy gave up
            post("side", &["a"], 200, true), // a shared id in another Envoy is fine
        ];
        let checks = run(&obs(posts.clone(), &[("gw", 2), ("side", 1)]));
        assert_eq!(checks.len(), 4);
        assert!(checks.iter().all(|c| c.pass), "{checks:?}");
        assert!(
            checks[0].detail.contains("1 answered 503")
                && checks[0].detail.contains("1 close_mid_body")
                && checks[0].detail.contains("1 with 202 unanswered"),
            "{}",
            checks[0].detail
        );
        // Counted exported but never acknowledged, or acknowledged and not counted.
        for n in [3, 1] {
            let checks = run(&obs(posts.clone(), &[("gw", n), ("side", 1)]));
            assert!(!checks[0].pass, "{n}: {checks:?}");
        }
        // Posts from an Envoy without the counter fail; a counter without posts must be 0.
        let checks = run(&obs(posts.clone(), &[("gw", 2)]));
        assert!(!checks[2].pass && checks[2].detail.contains("no counter"));
        let checks = run(&obs(vec![], &[("gw", 4)]));
        assert!(!checks[0].pass && checks[0].detail.contains("acknowledged 0 spans"));
        // A real collector, or an Envoy with neither counters nor posts: nothing to check.
        let mut real = obs(posts, &[("gw", 2)]);
        real.fake_collector = false;
        assert!(run(&real).is_empty());
        let mut none = obs(vec![], &[]);
        none.metrics.insert("trap".into(), BTreeMap::new());
        assert!(run(&none).is_empty());
    }

    #[test]
    fn a_span_in_two_acknowledged_requests_fails() {
        let posts = vec![
            post("gw", &["a", "b"], 202, true),
            post("gw", &["b"], 503, true), // a failed send of b: fine
            post("gw", &["b", "c"], 202, true),
        ];
        let checks = run(&obs(posts, &[("gw", 4)]));
        assert!(checks[0].pass, "{checks:?}");
        assert!(!checks[1].pass);
        assert!(
            checks[1]
                .detail
                .contains("span t/b in acknowledged requests #0 and #2"),
            "{}",
            checks[1].detail
        );
    }
}
