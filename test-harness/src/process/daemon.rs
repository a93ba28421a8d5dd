//! Long-running servers (the mesh's daemons, the bench's Envoys): each through the process supervisor, its output in a log file of
//! the run directory, and a bounded wait for it to answer.

use crate::process::Supervised;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A supervised daemon and the log file it writes (stdout and stderr).
pub struct Daemon {
    pub name: String,
    pub log: PathBuf,
    child: Supervised,
}

impl Daemon {
    /// Spawns `cmd` with its output appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Result<Daemon, String> {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = Supervised::spawn(cmd)
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Daemon {
            name: name.to_string(),
            log,
            child,
        })
    }

    /// Polls `ready` every 200 ms until it says `Ok`, the daemon exits, or `timeout` passes. The
    /// error carries the last probe answer and the log's tail.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<(), String>,
    ) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut last = String::from("not probed");
        while t0.elapsed() < timeout {
            if let Some(st) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({st}) before it was ready; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                ));
            }
            match ready() {
                Ok(()) => return Ok(t0.elapsed()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "{} not ready after {timeout:?}: {last}; log tail:\n{}",
            self.name,
            self.log_tail(30)
        ))
    }

    /// The process id (what `/proc/<pid>/stat` is read for).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().is_some()
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// The whole log (empty when unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
