//! Ctrl-C leaves nothing behind: the harness binary replays a topology (two Envoys under func-e,
//! a real Jaeger), is sent SIGINT while they run, and must exit 130 within seconds with every
//! process it started gone.
//!
//! The children are found three independent ways, before the interrupt: an environment variable
//! only this run carries (children inherit it), descent from the harness's pid, and their process
//! groups. The test fails, instead of passing vacuously, when they are not all there first.
//!
//! Needs what scenario 200 needs: dist/meshtrace.wasm, Envoy ($ENVOY_PATH or .tools/venv), func-e
//! and Jaeger (`make tools build`). Run: `cargo test -p test-harness --test interrupt`.

// A test: its helpers fail it by panicking, as `assert!` does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_harness::Tools;

const TOKEN_VAR: &str = "MESHTRACE_INTERRUPT_TEST";

/// One process as /proc shows it; `start` (clock ticks after boot) tells a reused pid apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: i32,
    start: u64,
    ppid: i32,
    pgrp: i32,
    state: char,
    comm: String,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    Some(Proc {
        pid,
        comm: stat[open + 1..close].to_string(),
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn all_procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .collect()
}

fn has_token(pid: i32, token: &str) -> bool {
    let want = format!("{TOKEN_VAR}={token}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        .unwrap_or(false)
}

/// Every running process of this run: carrying the token, or descending from `root`.
fn run_procs(root: i32, token: &str) -> Vec<Proc> {
    let procs = all_procs();
    let mut ours: BTreeSet<i32> = procs
        .iter()
        .filter(|p| p.pid != root && has_token(p.pid, token))
        .map(|p| p.pid)
        .collect();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            ours.insert(p.pid);
            frontier.push(p.pid);
        }
    }
    procs
        .into_iter()
        .filter(|p| ours.contains(&p.pid))
        .collect()
}

fn count(procs: &[Proc], comm: &str) -> usize {
    procs.iter().filter(|p| p.comm == comm).count()
}

/// Scenario 200 with a first request that waits two minutes, so the children stay up.
fn long_scenario(repo: &Path, dir: &Path) -> PathBuf {
    let src = repo.join("test-harness/scenarios/200-topology-a-istio-jaeger.yaml");
    let text = std::fs::read_to_string(&src).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let wait: serde_yaml::Value =
        serde_yaml::from_str("{via: gateway, path: /gettime, wait_ms: 120000}").unwrap();
    doc["name"] = "interrupt-test".into();
    let requests = doc["requests"].as_sequence_mut().unwrap();
    requests.insert(0, wait);
    let path = dir.join("interrupt-test.yaml");
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

fn start_harness(tools: &Tools, scenario: &Path, dir: &Path, token: &str) -> Child {
    let log = std::fs::File::create(dir.join("harness.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_test-harness"))
        .arg("replay")
        .arg("--envoy")
        .arg(tools.envoy_bin())
        .arg(scenario)
        .env(TOKEN_VAR, token)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits until the run's two Envoys (each under its func-e) and Jaeger run, then a moment more.
fn wait_for_children(harness: &mut Child, token: &str, log: &Path) -> Vec<Proc> {
    let root = harness.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let procs = run_procs(root, token);
        if count(&procs, "envoy") >= 2
            && count(&procs, "func-e") >= 2
            && count(&procs, "jaeger") >= 1
        {
            std::thread::sleep(Duration::from_secs(1));
            return run_procs(root, token);
        }
        let exited = harness.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "the children never all ran (harness: {exited:?}; seen {procs:?}); log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill_all(procs: &[Proc]) {
    for p in procs {
        if read_proc(p.pid).is_some_and(|q| q.start == p.start) {
            // SAFETY: kill(2) on a pid checked just above to be the process we recorded.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn sigint_stops_every_child() {
    let tools = Tools::discover().unwrap();
    if let Err(e) = tools.require(true) {
        panic!("the interrupt test cannot run:\n{e}");
    }
    let jaeger = &tools.collectors.jaeger;
    assert!(
        jaeger.is_file(),
        "the interrupt test needs Jaeger at {} (`make tools`, or set MESHTRACE_JAEGER)",
        jaeger.display()
    );
    let token = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = std::env::temp_dir().join(format!("meshtrace-interrupt-{token}"));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = long_scenario(&tools.repo, &dir);
    let log = dir.join("harness.log");
    let mut harness = start_harness(&tools, &scenario, &dir, &token);
    let root = harness.id() as i32;

    let before = wait_for_children(&mut harness, &token, &log);
    let groups: BTreeSet<i32> = before.iter().map(|p| p.pgrp).collect();
    // SAFETY: getpgrp(2) has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    assert!(
        !groups.contains(&own_group) && groups.len() >= 3,
        "children must run in process groups of their own: {before:?}"
    );

    // SAFETY: kill(2) on the harness we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(root, libc::SIGINT) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = harness.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = harness.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // Whatever the harness left, by any of the three ways of finding it.
    let left: Vec<Proc> = all_procs()
        .into_iter()
        .filter(|p| {
            has_token(p.pid, &token)
                || groups.contains(&p.pgrp)
                || before.iter().any(|b| b.pid == p.pid && b.start == p.start)
        })
        .collect();
    kill_all(&left);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        left.is_empty(),
        "after SIGINT these children are still running: {left:?}\n(before: {before:?})\nlog:\n{log_text}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "the harness must exit 130 within 15 s of SIGINT ({status:?}, {:?}); log:\n{log_text}",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
