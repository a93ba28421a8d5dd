//! Checks every scenario gets: well-formed export bodies and spans, and no crash in any log.

use super::{Check, Observations};
use crate::model::spans::truncate;

pub(super) fn builtin(obs: &Observations, out: &mut Vec<Check>) {
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

pub(super) fn no_crash(trapped: &[String], obs: &Observations, out: &mut Vec<Check>) {
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
