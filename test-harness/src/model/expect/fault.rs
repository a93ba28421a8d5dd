//! Checks for a fake collector that fails on purpose (`collector.fault`, `fault_status`,
//! `retry_after`) or goes down on a schedule (`outages`, `flap`).

use super::{Check, Observations};
use crate::model::observed::ExportPost;
use crate::model::scenario::CollectorExpect;
use std::collections::BTreeMap;

/// Slack for `honours_retry_after`: the proxy's clock and the collector's read the same host clock
/// at slightly different moments.
const RETRY_AFTER_SLACK_MS: u64 = 50;

/// The fault and schedule checks: the number of export requests the collector failed, its
/// schedule applied, exports resuming after each recovery, and `Retry-After` honoured.
pub fn fault_checks(expect: Option<&CollectorExpect>, obs: &Observations) -> Vec<Check> {
    let mut out = Vec::new();
    if !obs.timeline.problems.is_empty() {
        out.push(Check::fail(
            "collector outages applied (down, then listening again on the same port)",
            obs.timeline.problems.join("; "),
        ));
    }
    if let (Some(mode), Some(want)) = (&obs.collector_fault, expect.and_then(|e| e.faulted)) {
        let n = obs.posts.iter().filter(|p| p.faulted).count() as u64;
        out.push(Check::new(
            want.accepts(n),
            format!("collector misbehaved ({mode}) on {want} export requests"),
            format!("{n} of {} export requests", obs.posts.len()),
        ));
    }
    if let Some(ms) = expect.and_then(|e| e.resumed_within_ms) {
        out.push(resumed_check(ms, obs));
    }
    if expect.is_some_and(|e| e.honours_retry_after) {
        out.push(retry_after_check(obs));
    }
    out
}

/// After each recovery (down → up) with requests still being sent `within_ms` later, each Envoy
/// that exported anything had its first acknowledged export request within `within_ms` of the
/// collector listening again. Recoveries later than that are listed, not judged: with no new
/// spans, a retry may rightly wait out its backoff. At least one recovery must be judged.
fn resumed_check(within_ms: u64, obs: &Observations) -> Check {
    let label = format!(
        "exports resumed within {within_ms} ms of each recovery while requests flowed (first \
         acknowledged export request of each Envoy)"
    );
    let Some((start, end)) = obs.timeline.requests else {
        return Check::fail(label, "no requests were sent");
    };
    let mut acks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for p in &obs.posts {
        let list = acks.entry(p.envoy.as_str()).or_default();
        if let (true, Some(at)) = (p.acknowledged(), p.answered_ms) {
            list.push(at);
        }
    }
    let (mut judged, mut late, mut worst, mut notes) = (0, 0, 0, Vec::new());
    for &(up_at, _) in obs.timeline.changes.iter().filter(|(_, up)| *up) {
        let rel = up_at.saturating_sub(start);
        let firsts: Vec<(&str, Option<u64>)> = acks
            .iter()
            .map(|(e, at)| {
                (
                    *e,
                    at.iter().filter(|&&a| a >= up_at).min().map(|a| a - up_at),
                )
            })
            .collect();
        let show = |firsts: &[(&str, Option<u64>)]| {
            firsts
                .iter()
                .map(|(e, d)| match d {
                    Some(d) => format!("{e} {d} ms"),
                    None => format!("{e} none"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if up_at.saturating_add(within_ms) > end {
            notes.push(format!("+{rel}: {} (not judged)", show(&firsts)));
            continue;
        }
        judged += 1;
        worst = firsts.iter().filter_map(|(_, d)| *d).fold(worst, u64::max);
        let ok = !firsts.is_empty()
            && firsts
                .iter()
                .all(|(_, d)| d.is_some_and(|d| d <= within_ms));
        if !ok {
            late += 1;
        }
        let verdict = if ok { "" } else { ", too late" };
        notes.push(format!("+{rel}: {}{verdict}", show(&firsts)));
    }
    if judged == 0 {
        notes.insert(
            0,
            format!(
                "no recovery while requests flowed (they ran +0 to +{} ms)",
                end.saturating_sub(start)
            ),
        );
    }
    let pass = judged > 0 && late == 0;
    let detail = if pass {
        format!("{judged} recoveries judged, the slowest resumed after {worst} ms")
    } else {
        format!("up at (ms after the first request) {}", notes.join("; "))
    };
    Check::new(pass, label, detail)
}

/// After an answer with `Retry-After: S` (seconds) went out, the same Envoy's next export request
/// arrived no earlier than S seconds later. At least one such answer must have been followed by
/// another request.
fn retry_after_check(obs: &Observations) -> Check {
    let label = "after each Retry-After answer, the Envoy sent nothing for that many seconds";
    let (mut judged, mut bad, mut gaps) = (0, Vec::new(), Vec::new());
    for (i, p) in obs.posts.iter().enumerate() {
        let (Some(at), Some(secs)) = (p.answered_ms, retry_after_secs(p)) else {
            continue;
        };
        // Posts are recorded as they arrive: the later ones, received once the answer was out.
        let next = obs.posts[i + 1..]
            .iter()
            .filter(|q| q.envoy == p.envoy && q.received_ms >= at)
            .map(|q| q.received_ms)
            .min();
        let Some(next) = next else { continue };
        judged += 1;
        let gap = next - at;
        gaps.push(gap);
        if gap + RETRY_AFTER_SLACK_MS < secs * 1000 {
            bad.push(format!(
                "{}: Retry-After {secs} answered at {at} ms, next export request at {next} ms",
                p.envoy
            ));
        }
    }
    let detail = if judged == 0 {
        "no Retry-After answer was followed by another export request".to_string()
    } else if bad.is_empty() {
        format!(
            "{judged} answer(s); quiet for {} to {} ms after them",
            gaps.iter().min().unwrap_or(&0),
            gaps.iter().max().unwrap_or(&0)
        )
    } else {
        bad.join("; ")
    };
    Check::new(judged > 0 && bad.is_empty(), label, detail)
}

/// The whole seconds of a post's `Retry-After`, when it had one of that form.
fn retry_after_secs(p: &ExportPost) -> Option<u64> {
    p.retry_after.as_deref()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observed::{RecordedRequest, Timeline};
    use crate::model::scenario::CountSpec;

    /// A post received at `received`, answered `status` at `answered` (None: no answer).
    fn post(status: u16, received: u64, answered: Option<u64>) -> ExportPost {
        ExportPost {
            envoy: "gw".into(),
            request: RecordedRequest::default(),
            spans: Ok(vec![serde_json::json!({})]),
            fault: None,
            status,
            retry_after: None,
            faulted: status != 202,
            received_ms: received,
            answered_ms: answered,
        }
    }

    fn with_posts(posts: Vec<ExportPost>, changes: &[(u64, bool)], end: u64) -> Observations {
        Observations {
            posts,
            collector_fault: Some("status 503 (1 in 2)".into()),
            timeline: Timeline {
                changes: changes.to_vec(),
                requests: Some((0, end)),
                problems: Vec::new(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn faulted_requests_are_counted() {
        let mut obs = with_posts(vec![post(202, 0, Some(1)), post(503, 2, Some(3))], &[], 10);
        let want = |n| CollectorExpect {
            faulted: Some(CountSpec::Exact(n)),
            ..Default::default()
        };
        assert!(fault_checks(Some(&want(1)), &obs)[0].pass);
        assert!(!fault_checks(Some(&want(2)), &obs)[0].pass);
        obs.collector_fault = None;
        assert!(fault_checks(Some(&want(1)), &obs).is_empty());
        obs.timeline
            .problems
            .push("listen again: EADDRINUSE".into());
        assert!(!fault_checks(None, &obs)[0].pass);
    }

    #[test]
    fn resumed_within_rows() {
        /// (name, acknowledged answers at, changes, requests end, passes)
        type Row<'a> = (&'a str, &'a [u64], &'a [(u64, bool)], u64, bool);
        let rows: &[Row] = &[
            (
                "one recovery, export 300 ms later",
                &[100, 1800],
                &[(500, false), (1500, true)],
                3000,
                true,
            ),
            (
                "too late",
                &[100, 2300],
                &[(500, false), (1500, true)],
                3000,
                false,
            ),
            (
                "nothing after the recovery",
                &[100],
                &[(500, false), (1500, true)],
                3000,
                false,
            ),
            (
                "recovery after the requests: not judged, none left",
                &[100],
                &[(500, false), (2800, true)],
                3000,
                false,
            ),
            (
                "flapping: the last recovery is not judged",
                &[100, 1100, 2100],
                &[
                    (500, false),
                    (1000, true),
                    (1500, false),
                    (2000, true),
                    (2500, false),
                    (2900, true),
                ],
                3000,
                true,
            ),
        ];
        for (name, acks, changes, end, want) in rows {
            let posts = acks.iter().map(|a| post(202, a - 1, Some(*a))).collect();
            let obs = with_posts(posts, changes, *end);
            let c = resumed_check(700, &obs);
            assert_eq!(c.pass, *want, "row {name}: {}", c.detail);
        }
        // Every Envoy that exported must resume, not just one of them.
        let mut other = post(202, 100, Some(101));
        other.envoy = "side".into();
        let obs = with_posts(
            vec![post(202, 1799, Some(1800)), other],
            &[(500, false), (1500, true)],
            3000,
        );
        let c = resumed_check(700, &obs);
        assert!(
            !c.pass && c.detail.contains("gw 300 ms, side none, too late"),
            "{}",
            c.detail
        );
        // Only acknowledged answers count: a 503 right after the recovery does not.
        let obs = with_posts(
            vec![post(503, 1500, Some(1501)), post(202, 2599, Some(2600))],
            &[(500, false), (1500, true)],
            3000,
        );
        assert!(!resumed_check(700, &obs).pass);
    }

    #[test]
    fn retry_after_rows() {
        let ra = |mut p: ExportPost, v: &str| {
            p.retry_after = Some(v.into());
            p
        };
        // (name, posts, passes)
        let rows: Vec<(&str, Vec<ExportPost>, bool)> = vec![
            (
                "quiet for 1 s",
                vec![ra(post(429, 0, Some(10)), "1"), post(202, 1010, Some(1011))],
                true,
            ),
            (
                "within the slack",
                vec![ra(post(429, 0, Some(10)), "1"), post(202, 965, Some(966))],
                true,
            ),
            (
                "too soon",
                vec![ra(post(429, 0, Some(10)), "1"), post(202, 500, Some(501))],
                false,
            ),
            (
                "no request after it",
                vec![ra(post(429, 0, Some(10)), "1")],
                false,
            ),
            (
                "not delivered: not judged",
                vec![
                    ra(post(429, 0, None), "1"),
                    post(202, 20, Some(21)),
                    ra(post(429, 30, Some(31)), "1"),
                    post(202, 1100, Some(1101)),
                ],
                true,
            ),
        ];
        for (name, posts, want) in rows {
            let c = retry_after_check(&with_posts(posts, &[], 5000));
            assert_eq!(c.pass, want, "row {name}: {}", c.detail);
        }
    }
}
