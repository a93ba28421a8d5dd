//! Checks for a fake collector with a fault mode (`collector.fault`).

use super::counters::metric_value;
use super::{Check, Observations};
use crate::model::observed::ExportPost;
use crate::model::scenario::CollectorExpect;

/// Checks for a collector with a fault mode: the number of export requests it failed, and the
/// built-in one that every span it accepted, and no other, counts as exported.
pub fn fault_checks(expect: Option<&CollectorExpect>, obs: &Observations) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(mode) = obs.collector_fault else {
        return out;
    };
    let faulted: Vec<&ExportPost> = obs.posts.iter().filter(|p| p.fault.is_some()).collect();
    let span_count = |p: &&ExportPost| p.spans.as_ref().map_or(0, Vec::len) as u64;
    let accepted: Vec<&ExportPost> = obs
        .posts
        .iter()
        .filter(|p| p.fault.is_none() && (200..300).contains(&p.status))
        .collect();
    let accepted_spans: u64 = accepted.iter().map(span_count).sum();
    let faulted_spans: u64 = faulted.iter().map(span_count).sum();
    let exported: u64 = obs
        .metrics
        .values()
        .map(|st| metric_value(st, "spans_exported"))
        .sum();
    out.push(Check::new(
        accepted_spans == exported,
        format!(
            "built-in: spans the collector accepted == spans_exported ({})",
            mode.name()
        ),
        format!(
            "accepted {accepted_spans} spans in {} export requests, failed {} requests \
             ({faulted_spans} spans); spans_exported {exported}",
            accepted.len(),
            faulted.len()
        ),
    ));
    if let Some(want) = expect.and_then(|e| e.faulted) {
        let n = faulted.len() as u64;
        out.push(Check::new(
            want.accepts(n),
            format!(
                "collector misbehaved ({}) on {want} export requests",
                mode.name()
            ),
            format!("{n} of {} export requests", obs.posts.len()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scenario::{CollectorFault, CountSpec};

    fn post(fault: Option<CollectorFault>, status: u16, spans: usize) -> ExportPost {
        ExportPost {
            envoy: "gw".into(),
            request: crate::model::observed::RecordedRequest::default(),
            spans: Ok(vec![serde_json::json!({}); spans]),
            fault,
            status,
        }
    }

    #[test]
    fn accepted_spans_must_match_exported() {
        let mut obs = Observations {
            collector_fault: Some(CollectorFault::CloseMidBody),
            posts: vec![
                post(None, 202, 3),
                post(Some(CollectorFault::CloseMidBody), 202, 5),
            ],
            ..Default::default()
        };
        obs.metrics.insert(
            "gw".into(),
            [("wasmcustom.meshtrace_spans_exported".to_string(), 3)].into(),
        );
        let want = CollectorExpect {
            faulted: Some(CountSpec::Exact(1)),
            ..Default::default()
        };
        let checks = fault_checks(Some(&want), &obs);
        assert!(checks.iter().all(|c| c.pass), "{checks:?}");
        obs.posts[0].status = 500;
        let checks = fault_checks(None, &obs);
        assert!(!checks[0].pass && checks[0].detail.contains("accepted 0 spans"));
        obs.collector_fault = None;
        assert!(fault_checks(Some(&want), &obs).is_empty());
    }
}
