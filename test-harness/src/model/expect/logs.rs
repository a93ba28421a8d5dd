//! `logs:`: what each Envoy's log must (not) contain.

use super::{Check, Observations};
use crate::model::scenario::LogExpect;
use crate::model::spans::truncate;
use std::collections::BTreeMap;

pub(super) fn log_checks(
    expect: &BTreeMap<String, LogExpect>,
    obs: &Observations,
    out: &mut Vec<Check>,
) {
    for (envoy, le) in expect {
        let text = obs.logs.get(envoy).map(String::as_str).unwrap_or("");
        for s in &le.contains {
            out.push(Check::new(
                text.contains(s.as_str()),
                format!("log {envoy} contains {s:?}"),
                meshtrace_log_excerpt(text),
            ));
        }
        for pat in &le.matches {
            let found = text.lines().find(|l| pat.is_match(l));
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
}

/// The last lines a reader needs to see why a log expectation failed.
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
