//! A supervised child: its own process group, registered for interrupt cleanup, stopped (group
//! SIGTERM, bounded wait, group SIGKILL) by [`Supervised::stop`] or on drop.

use crate::process::group::{group_alive, signal_group, wait_group_gone};
use crate::process::registry;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a group gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long the rest of a group may outlive its leader after SIGTERM: func-e exits once it has
/// forwarded the signal, and an Envoy still running half a second later is not stopping.
const ORPHAN_GRACE: Duration = Duration::from_millis(500);

/// How long a SIGKILLed group may take to go (it cannot refuse; this only bounds a stuck kernel).
const KILL_WAIT: Duration = Duration::from_secs(1);

pub struct Supervised {
    child: Child,
    /// The child's pid, which is also its process group id.
    pgid: i32,
    exited: Option<ExitStatus>,
    stopped: bool,
}

impl Supervised {
    /// Spawns `cmd` as the leader of a new process group and registers the group. The error is
    /// the spawn error as is, so callers word it as before.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Supervised> {
        let child = cmd.process_group(0).spawn()?;
        let mut s = Supervised {
            pgid: child.id() as i32,
            child,
            exited: None,
            stopped: false,
        };
        if let Err(e) = registry::register(s.pgid) {
            // Stop it now (dropping `s` would too, and unregisters it).
            s.stop();
            return Err(e);
        }
        Ok(s)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The leader's exit status, once it has exited (the rest of its group may still run).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// Waits up to `timeout` for the leader to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.try_wait()
    }

    /// SIGTERM to the group, then SIGKILL after [`STOP_GRACE`], or [`ORPHAN_GRACE`] after the
    /// leader exited while the rest of its group lives on. Also stops a group whose leader
    /// exited by itself earlier. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.try_wait();
        if group_alive(self.pgid) {
            signal_group(self.pgid, libc::SIGTERM);
            self.wait_group_gone();
            if group_alive(self.pgid) {
                signal_group(self.pgid, libc::SIGKILL);
                wait_group_gone(self.pgid, KILL_WAIT);
            }
        }
        if self.exited.is_none() {
            // The leader is dead or SIGKILLed: this returns at once.
            if let Ok(st) = self.child.wait() {
                self.exited = Some(st);
            }
        }
        self.stopped = true;
    }

    fn wait_group_gone(&mut self) {
        let deadline = Instant::now() + STOP_GRACE;
        let mut leader_gone_at: Option<Instant> = None;
        while Instant::now() < deadline {
            let leader_gone = self.try_wait().is_some();
            if !group_alive(self.pgid) {
                return;
            }
            if leader_gone
                && leader_gone_at.get_or_insert_with(Instant::now).elapsed() > ORPHAN_GRACE
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
        registry::unregister(self.pgid);
    }
}

/// Runs a short-lived command to completion, supervised like any child: stdin is /dev/null,
/// stdout and stderr are captured. After `timeout` the group is stopped and the error's kind is
/// `TimedOut`.
pub fn output(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    collect(cmd.stderr(Stdio::piped()), timeout)
}

/// As [`output`], but the command's stderr goes to the harness's (e.g. crane's push progress).
pub fn output_showing_stderr(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    collect(cmd.stderr(Stdio::inherit()), timeout)
}

fn collect(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let mut child = Supervised::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()))?;
    let stdout = child.child.stdout.take().map(read_to_end);
    let stderr = child.child.stderr.take().map(read_to_end);
    let status = child.wait_timeout(timeout);
    // Also ends what the leader left running, which could hold the pipes open.
    child.stop();
    let join = |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stdout, stderr) = (join(stdout), join(stderr));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("did not finish within {} s", timeout.as_secs()),
        )),
    }
}

/// Drains a pipe on a thread, so a child filling one pipe never blocks on it.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn output_captures_both_streams_and_the_status() {
        let out = output(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn a_command_past_its_timeout_is_stopped_with_its_group() {
        let t0 = Instant::now();
        let e = output(&mut sh("sleep 30 & sleep 30"), Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn stop_ends_a_group_that_outlives_its_leader() {
        // The leader exits at once and leaves a background sleep in its group (like func-e
        // leaving Envoy), which also ignores SIGTERM.
        let mut c = sh("trap '' TERM; sleep 30 & exit 0");
        let mut s = Supervised::spawn(c.stdout(Stdio::null())).unwrap();
        let pgid = s.pgid;
        assert!(s.wait_timeout(Duration::from_secs(5)).is_some());
        std::thread::sleep(Duration::from_millis(100));
        assert!(group_alive(pgid), "the background sleep runs on");
        let t0 = Instant::now();
        drop(s);
        assert!(!group_alive(pgid));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
}
