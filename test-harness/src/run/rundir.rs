//! The run directories under `<repo>/.harness-runs/`: each run writes its generated configs, logs
//! and spans into its own directory, so parallel runs never share a file and a failed run can be
//! kept for reading.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where run directories live, relative to the repository root (ignored by git).
pub const RUNS_DIR: &str = ".harness-runs";

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates a fresh directory `<repo>/.harness-runs/<name>-<secs>-<pid>-<n>`: the time sorts
/// runs, the process id and counter keep parallel runs (threads and processes) apart.
pub fn run_dir(repo: &Path, name: &str) -> Result<PathBuf, String> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let dir = repo.join(RUNS_DIR).join(format!(
        "{}-{secs}-{}-{}",
        sanitize(name),
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `name` with every character but ASCII letters, digits, `-` and `_` replaced by `_`, so a
/// scenario or Envoy name is safe as one path component.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_one_path_component() {
        assert_eq!(sanitize("a/b c.d-e_f"), "a_b_c_d-e_f");
    }

    #[test]
    fn run_dirs_are_distinct() {
        let repo = std::env::temp_dir().join(format!("rundir-test-{}", std::process::id()));
        let a = run_dir(&repo, "x").unwrap();
        let b = run_dir(&repo, "x").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(repo.join(RUNS_DIR)));
        let _ = std::fs::remove_dir_all(&repo);
    }
}
