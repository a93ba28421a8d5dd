//! Launching Envoy through func-e, readiness, stats and teardown.

use crate::process::Supervised;
use crate::run::http;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static BASE_ID_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A base id unlikely to collide with any other Envoy on the machine: derived from the pid and a
/// per-process counter.
pub fn next_base_id() -> u32 {
    let n = BASE_ID_COUNTER.fetch_add(1, Ordering::Relaxed) % 1000;
    (std::process::id() % 4_000) * 1000 + n + 1
}

#[derive(Debug, Clone)]
pub struct Launch {
    /// Scenario-level name (used for the func-e run id and log files).
    pub name: String,
    /// Generated Envoy YAML file.
    pub config_path: PathBuf,
    /// Directory for func-e's home/state/runtime dirs and console output.
    pub work_dir: PathBuf,
    pub envoy_bin: PathBuf,
    pub func_e_bin: PathBuf,
    pub concurrency: u32,
    /// `--component-log-level` value.
    pub component_log_level: String,
    pub extra_args: Vec<String>,
    /// `--service-node` value (None: not passed, e.g. when the bootstrap names the node).
    pub service_node: Option<String>,
}

#[derive(Debug)]
pub enum StartOutcome {
    Ready,
    /// The process exited before becoming ready.
    Exited(Option<ExitStatus>),
    TimedOut,
}

pub struct EnvoyProcess {
    pub name: String,
    pub work_dir: PathBuf,
    pub run_id: String,
    /// func-e, leading the process group Envoy runs in.
    child: Supervised,
    pub admin: Option<String>,
}

// The demo's `--hold` imports it from here.
pub use crate::process::hold_until_interrupt;

impl EnvoyProcess {
    pub fn spawn(l: &Launch) -> Result<EnvoyProcess, String> {
        std::fs::create_dir_all(&l.work_dir)
            .map_err(|e| format!("mkdir {}: {e}", l.work_dir.display()))?;
        let run_id = format!("{}-{}", l.name, std::process::id());
        let fe = l.work_dir.join("func-e");
        let out = File::create(l.work_dir.join("func-e.console.log"))
            .map_err(|e| format!("create console log: {e}"))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&l.func_e_bin);
        cmd.arg("run")
            .arg("-c")
            .arg(&l.config_path)
            .arg("--base-id")
            .arg(next_base_id().to_string())
            // No hot-restart shared memory: nothing is left in /dev/shm when Envoy is killed.
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg(l.concurrency.to_string())
            .arg("--component-log-level")
            .arg(&l.component_log_level)
            .args(&l.extra_args)
            .args(match &l.service_node {
                Some(node) if !l.extra_args.iter().any(|a| a == "--service-node") => {
                    vec!["--service-node".to_string(), node.clone()]
                }
                _ => vec![],
            })
            .current_dir(&l.work_dir)
            .env("ENVOY_PATH", &l.envoy_bin)
            .env("FUNC_E_HOME", fe.join("home"))
            .env("FUNC_E_STATE_HOME", fe.join("state"))
            .env("FUNC_E_RUNTIME_DIR", fe.join("runtime"))
            .env("FUNC_E_CONFIG_HOME", fe.join("config"))
            .env("FUNC_E_DATA_HOME", fe.join("data"))
            .env("FUNC_E_RUN_ID", &run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = Supervised::spawn(&mut cmd)
            .map_err(|e| format!("cannot run {}: {e}", l.func_e_bin.display()))?;
        Ok(EnvoyProcess {
            name: l.name.clone(),
            work_dir: l.work_dir.clone(),
            run_id,
            child,
            admin: None,
        })
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Finds a file func-e wrote for this run (layout differs between func-e versions and whether
    /// FUNC_E_HOME is set, so search the run's func-e directory).
    pub fn find_file(&self, file: &str) -> Option<PathBuf> {
        fn walk(dir: &Path, file: &str, run_id: &str, depth: u32) -> Option<PathBuf> {
            if depth > 6 {
                return None;
            }
            let entries = std::fs::read_dir(dir).ok()?;
            let mut subdirs = Vec::new();
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    subdirs.push(p);
                } else if p.file_name().and_then(|n| n.to_str()) == Some(file)
                    && p.to_string_lossy().contains(run_id)
                {
                    return Some(p);
                }
            }
            subdirs
                .into_iter()
                .find_map(|d| walk(&d, file, run_id, depth + 1))
        }
        walk(&self.work_dir.join("func-e"), file, &self.run_id, 0)
    }

    /// The directory holding stdout.log/stderr.log/config_dump.json.
    pub fn run_log_dir(&self) -> Option<PathBuf> {
        self.find_file("stderr.log")
            .and_then(|p| p.parent().map(Path::to_path_buf))
    }

    /// Waits until `GET /ready` answers 200 `LIVE`, the process exits, or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> StartOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.poll_exit() {
                return StartOutcome::Exited(Some(st));
            }
            if self.admin.is_none() {
                if let Some(p) = self.find_file("admin-address.txt") {
                    if let Ok(a) = std::fs::read_to_string(&p) {
                        let a = a.trim().to_string();
                        if a.contains(':') && !a.ends_with(":0") {
                            self.admin = Some(a);
                        }
                    }
                }
            }
            if let Some(a) = &self.admin {
                if let Ok((200, body)) = http::get(a, "/ready", Duration::from_secs(2)) {
                    if body.trim() == "LIVE" {
                        return StartOutcome::Ready;
                    }
                }
            }
            if Instant::now() >= deadline {
                return StartOutcome::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit (used for expected start failures after `wait_ready`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    fn admin_get(&self, path: &str) -> Result<String, String> {
        let a = self.admin.as_ref().ok_or("admin address unknown")?;
        match http::get(a, path, Duration::from_secs(5))? {
            (200, body) => Ok(body),
            (s, body) => Err(format!("admin {path}: HTTP {s}: {}", body.trim())),
        }
    }

    /// The address of the first listener, from `/listeners?format=json`.
    pub fn listener_addr(&self) -> Result<SocketAddr, String> {
        let body = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("/listeners: {e}"))?;
        let sa = v
            .get("listener_statuses")
            .and_then(|l| l.get(0))
            .and_then(|l| l.get("local_address"))
            .and_then(|a| a.get("socket_address"))
            .ok_or_else(|| format!("/listeners: unexpected shape {body}"))?;
        let ip = sa
            .get("address")
            .and_then(|x| x.as_str())
            .unwrap_or("127.0.0.1");
        let port = sa
            .get("port_value")
            .and_then(|x| x.as_u64())
            .ok_or("/listeners: no port_value")?;
        format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("/listeners: {e}"))
    }

    /// The text of `/stats/prometheus`.
    pub fn prometheus(&self) -> Result<String, String> {
        self.admin_get("/stats/prometheus")
    }

    /// Counters and gauges whose name contains `filter` (from `/stats?format=json`).
    pub fn stats(&self, filter: &str) -> Result<BTreeMap<String, u64>, String> {
        let body = self.admin_get(&format!("/stats?format=json&filter={filter}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("/stats: {e}"))?;
        let mut out = BTreeMap::new();
        if let Some(list) = v.get("stats").and_then(|s| s.as_array()) {
            for s in list {
                if let (Some(n), Some(val)) = (
                    s.get("name").and_then(|x| x.as_str()),
                    s.get("value").and_then(|x| x.as_u64()),
                ) {
                    out.insert(n.to_string(), val);
                }
            }
        }
        Ok(out)
    }

    /// Envoy's console output (stderr.log + stdout.log of the func-e run, else func-e's console).
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Some(dir) = self.run_log_dir() {
            for f in ["stderr.log", "stdout.log"] {
                if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
                    text.push_str(&t);
                }
            }
        }
        if text.trim().is_empty() {
            if let Ok(t) = std::fs::read_to_string(self.work_dir.join("func-e.console.log")) {
                text.push_str(&t);
            }
        }
        text
    }

    /// Up to `n` log lines worth showing after a start failure: the critical/error/meshtrace lines,
    /// or else the last lines.
    pub fn log_excerpt(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        let notable: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.contains("[critical]") || l.contains("[error]") || l.contains("meshtrace:")
            })
            .collect();
        let pick = if notable.is_empty() { &lines } else { &notable };
        pick[pick.len().saturating_sub(n)..].join("\n")
    }

    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.poll_exit()
    }

    /// Stops func-e and Envoy (their process group; see [`Supervised::stop`]).
    pub fn stop(&mut self) {
        self.child.stop();
    }
}
