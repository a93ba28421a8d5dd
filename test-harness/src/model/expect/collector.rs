//! `collector_requests:`: the export requests the fake collector received — how many, how big,
//! how many at once, and their path and headers.

use super::{check_headers, describe_headers, Check, Observations};
use crate::model::matcher::Matcher;
use crate::model::scenario::CollectorExpect;
use crate::model::spans::truncate;

pub(super) fn collector_checks(ce: &CollectorExpect, obs: &Observations, out: &mut Vec<Check>) {
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
    let sizes: Vec<usize> = obs
        .posts
        .iter()
        .map(|p| p.spans.as_ref().map_or(0, Vec::len))
        .collect();
    if let Some(maxs) = ce.max_spans_per_request {
        out.push(Check::new(
            !sizes.is_empty() && sizes.iter().all(|s| *s as u64 <= maxs),
            format!("every export request carries <= {maxs} spans"),
            format!("batch sizes {sizes:?}"),
        ));
    }
    if let Some(want) = &ce.spans_per_request {
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
        out.push(path_check(pm, obs));
    }
    if !ce.headers.is_empty() {
        out.push(headers_check(ce, obs));
    }
}

fn path_check(pm: &Matcher, obs: &Observations) -> Check {
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
    Check::new(
        bad.is_empty() && !obs.posts.is_empty(),
        format!("every export request path {pm}"),
        if obs.posts.is_empty() {
            "no export requests were received".to_string()
        } else {
            bad.join("; ")
        },
    )
}

fn headers_check(ce: &CollectorExpect, obs: &Observations) -> Check {
    let mut bad = Vec::new();
    for (i, p) in obs.posts.iter().enumerate() {
        for e in check_headers(&p.request, &ce.headers, obs) {
            bad.push(format!("#{i} (from {}): {e}", p.envoy));
        }
    }
    Check::new(
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
    )
}
