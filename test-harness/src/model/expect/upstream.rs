//! What the upstream apps received: request counts, headers, sampling, per-request uniqueness.

use super::{check_headers, describe_headers, Check, Observations};
use crate::model::observed::RecordedRequest;
use crate::model::scenario::{Expect, HeaderExpect, RequestSel};
use std::collections::BTreeSet;

pub(super) fn upstream_checks(expect: &Expect, obs: &Observations, out: &mut Vec<Check>) {
    for (up, names) in &expect.upstream_unique {
        for name in &names.0 {
            out.push(unique_check(up, name, requests(obs, up)));
        }
    }
    for (up, want) in &expect.upstream_requests {
        let n = requests(obs, up).len() as u64;
        out.push(Check::new(
            want.accepts(n),
            format!("upstream {up} received {want} request(s)"),
            format!("got {n}"),
        ));
    }
    for (up, entries) in &expect.upstream_headers {
        for e in entries {
            out.push(header_check(up, e, obs));
        }
    }
    for (up, [lo, hi]) in &expect.upstream_sampled_between {
        let reqs = requests(obs, up);
        let n = reqs.iter().filter(|r| r.sampled()).count() as u64;
        out.push(Check::new(
            *lo <= n && n <= *hi,
            format!("upstream {up}: requests with sampled=1 in [{lo}, {hi}]"),
            format!("got {n} of {}", reqs.len()),
        ));
    }
    for up in &expect.sampled_matches_spans.0 {
        out.push(sampled_matches_spans(up, obs));
    }
}

/// The requests `up` received, none when it received nothing (or is unknown).
fn requests<'a>(obs: &'a Observations, up: &str) -> &'a [RecordedRequest] {
    obs.upstreams.get(up).map_or(&[], Vec::as_slice)
}

/// `upstream_unique`: every request carries header `name`, each with its own value.
fn unique_check(up: &str, name: &str, reqs: &[RecordedRequest]) -> Check {
    let values: Vec<Option<String>> = reqs.iter().map(|r| r.header(name)).collect();
    let missing = values.iter().filter(|v| v.is_none()).count();
    let distinct: BTreeSet<&String> = values.iter().flatten().collect();
    let dups = values.len() - missing - distinct.len();
    Check::new(
        !reqs.is_empty() && missing == 0 && dups == 0,
        format!("upstream {up}: every request has its own {name}"),
        format!(
            "{} request(s), {missing} without it, {dups} repeated value(s)",
            reqs.len()
        ),
    )
}

/// One `upstream_headers` entry: the selected requests all carry the headers.
fn header_check(up: &str, e: &HeaderExpect, obs: &Observations) -> Check {
    let reqs = requests(obs, up);
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
        return Check::fail(
            label,
            format!(
                "upstream {up} received only {} request(s) (no #{i})",
                reqs.len()
            ),
        );
    }
    if indices.is_empty() {
        return Check::fail(label, format!("upstream {up} received no requests"));
    }
    let mut failures = Vec::new();
    for &i in &indices {
        let r = &reqs[i];
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
            indices.len(),
            failures.join(" | ")
        )
    };
    Check::new(failures.is_empty(), label, detail)
}

/// `sampled_matches_spans`: the span ids `up` saw on sampled requests are exactly the ids of the
/// spans the Envoys in front of it exported.
fn sampled_matches_spans(up: &str, obs: &Observations) -> Check {
    let seen: BTreeSet<String> = requests(obs, up)
        .iter()
        .filter(|r| r.sampled())
        .filter_map(|r| r.header("x-b3-spanid"))
        .collect();
    let envoys: BTreeSet<&String> = obs
        .envoy_upstream
        .iter()
        .filter(|(_, u)| u.as_deref() == Some(up))
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
    Check::new(
        seen == ids,
        format!("upstream {up}: sampled x-b3-spanid set == span ids exported by {envoys:?}"),
        format!(
            "{} sampled at upstream, {} spans; only at upstream: {only_up:?}; only in spans: {only_spans:?}",
            seen.len(),
            ids.len()
        ),
    )
}
