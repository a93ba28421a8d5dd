//! Replays every scenario in test-harness/scenarios/ against real Envoy + the built wasm module.
//!
//! Needs dist/meshtrace.wasm (`make build`), the Envoy binary (.tools/venv or $ENVOY_PATH) and
//! func-e (.tools/bin/func-e); a missing one fails the test with a message saying how to get it.
//! MESHTRACE_SCENARIOS=substring limits the run to matching file names.

use std::path::PathBuf;
use test_harness::{report, run_many, Tools};

#[test]
fn all_scenarios() {
    let tools = match Tools::discover() {
        Ok(t) => t,
        Err(e) => panic!("cannot locate the repository: {e}"),
    };
    if let Err(e) = tools.require(true) {
        panic!("the scenario suite cannot run:\n{e}");
    }
    let dir = tools.repo.join("test-harness").join("scenarios");
    let filter = std::env::var("MESHTRACE_SCENARIOS").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| p.to_string_lossy().contains(filter.as_str()))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no scenario files in {} (filter {filter:?})",
        dir.display()
    );
    let jobs = std::env::var("MESHTRACE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2);
    let outcomes = run_many(&files, &tools, jobs, &|o| {
        // Full reports for failures, one line for passes (cargo test captures this unless
        // --nocapture, and shows it on failure).
        if o.passed() {
            println!(
                "PASS {} ({:.1}s, {} checks)",
                o.name,
                o.elapsed.as_secs_f64(),
                o.checks.len()
            );
        } else {
            println!("{}", report::render(o));
        }
    });
    let summary = report::summary(&outcomes);
    println!("{summary}");
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed: {}\n(full reports above; run one with `cargo run -p test-harness -- replay test-harness/scenarios/<file>`)",
        failed.len(),
        outcomes.len(),
        failed.join(", ")
    );
}
