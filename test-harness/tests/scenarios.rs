//! One test per scenario file in test-harness/scenarios/, each replayed against real Envoy and the
//! built wasm module. `cargo test -p test-harness --test scenarios -- 080` runs the scenarios whose
//! name contains `080`; `-- --list` lists them all; a failure is listed by its scenario name, with
//! its full report.
//!
//! Needs dist/meshtrace.wasm (`make build`), the Envoy binary (.tools/venv or $ENVOY_PATH) and
//! func-e (.tools/bin/func-e); a missing one fails every scenario with a message saying how to get
//! it (the runner's "tools are available" check). Scenarios run two at a time unless `--test-threads N` (or `$MESHTRACE_JOBS`) says otherwise.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use test_harness::{report, run_file, Tools};

/// Scenarios in parallel when neither `--test-threads` nor `$MESHTRACE_JOBS` is given: each one
/// starts one or more Envoys, and this machine class has two cores.
const DEFAULT_JOBS: usize = 2;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        let jobs = std::env::var("MESHTRACE_JOBS")
            .ok()
            .and_then(|j| j.parse().ok())
            .unwrap_or(DEFAULT_JOBS);
        args.test_threads = Some(jobs);
    }
    let trials = match trials() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("the scenario suite cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    libtest_mimic::run(&args, trials).exit_code()
}

/// One trial per scenario file, named after the file (without `.yaml`).
fn trials() -> Result<Vec<Trial>, String> {
    let tools =
        Arc::new(Tools::discover().map_err(|e| format!("cannot locate the repository: {e}"))?);
    let dir = tools.repo.join("test-harness").join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no scenario files in {}", dir.display()));
    }
    Ok(files
        .into_iter()
        .map(|path| {
            let tools = tools.clone();
            Trial::test(name_of(&path), move || replay(&path, &tools))
        })
        .collect())
}

fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A missing tool fails the scenario through its report ("tools are available"), which says how to
/// get it.
fn replay(path: &Path, tools: &Tools) -> Result<(), Failed> {
    let outcome = run_file(path, tools);
    if outcome.passed() {
        return Ok(());
    }
    Err(format!(
        "{}\n(run it alone with `cargo run -p test-harness -- replay {}`)",
        report::render(&outcome),
        path.display()
    )
    .into())
}
