//! Outcomes, the import × status tables and the failure list, written straight to stderr so they
//! show even when the test passes (libtest captures only the print macros).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Clone, Debug)]
pub enum Outcome {
    /// The fault never fired: the module made no such call in this lifecycle.
    NotCalled,
    /// Handled without a counter, where none is required.
    Ok,
    /// Handled and counted (internal_errors, or a failed/dropped export).
    Counted,
    /// on_configure refused, as it must when the configuration cannot be read.
    Refused,
    Fail(String),
    Trap(String),
}

impl Outcome {
    pub fn cell(&self) -> &'static str {
        match self {
            Outcome::NotCalled => "-",
            Outcome::Ok => "ok",
            Outcome::Counted => "cnt",
            Outcome::Refused => "ref",
            Outcome::Fail(_) => "FAIL",
            Outcome::Trap(_) => "TRAP",
        }
    }

    pub fn problem(&self) -> Option<&str> {
        match self {
            Outcome::Fail(m) | Outcome::Trap(m) => Some(m),
            _ => None,
        }
    }
}

pub const LEGEND: &str = "cells: cnt = handled and counted, ok = handled (no counter required), \
ref = on_configure refused with a log line, - = the module never made that call, TRAP = the \
module trapped, FAIL = no trap but a contract check failed";

/// One block of output, written in one piece so parallel tests do not interleave.
pub fn emit(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.write_all(b"\n");
    let _ = err.flush();
}

/// A fixed-width table: the first column holds row names.
pub fn table(title: &str, columns: &[String], rows: &[(String, Vec<&str>)]) -> String {
    let first = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(6);
    let widths: Vec<usize> = columns.iter().map(|c| c.len().max(4)).collect();
    let mut out = format!("{title}\n{:first$}", "");
    for (c, w) in columns.iter().zip(&widths) {
        out.push_str(&format!(" {c:>w$}"));
    }
    out.push('\n');
    for (name, cells) in rows {
        out.push_str(&format!("{name:first$}"));
        for (cell, w) in cells.iter().zip(&widths) {
            out.push_str(&format!(" {cell:>w$}"));
        }
        out.push('\n');
    }
    out
}

/// Failures grouped by message, with digits masked so "status 2" and "status 3" share a line.
pub fn failures(items: &[(String, &Outcome)]) -> (usize, String) {
    let mut groups: BTreeMap<String, (Vec<&str>, &str)> = BTreeMap::new();
    let mut count = 0;
    for (label, outcome) in items {
        let Some(message) = outcome.problem() else {
            continue;
        };
        count += 1;
        let key: String = message
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        groups
            .entry(key)
            .or_insert((Vec::new(), message))
            .0
            .push(label);
    }
    let mut out = String::new();
    for (labels, message) in groups.values() {
        out.push_str(&format!("  - {}\n    {message}\n", labels.join(", ")));
    }
    (count, out)
}

/// Runs `f` over `items` on every core; results keep the items' order.
pub fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    break;
                };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| panic!("a worker thread died before finishing its case")))
        .collect()
}
