//! Runs one scenario end to end: collectors, upstream apps, Envoys (in start waves), requests,
//! quiescence, read-back, teardown, evaluation. Each phase is one method of [`Run`]; the phases
//! live by concern in the submodules.

mod bootstrap;
mod readback;
mod stats;
mod topology;

pub use bootstrap::write_envoy_config;

use crate::model::expect::{evaluate, Check, Observations};
use crate::model::scenario::{RealCollectorKind, ReloadSpec, Scenario};
use crate::model::spans::Span;
use crate::run::collectors::RealCollector;
use crate::run::load::{self, SendContext};
use crate::run::rundir::run_dir;
use crate::run::upstream::{now_us, ClosedPort, Collector, RouteTable, UpstreamServer};
use crate::tools::Tools;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use topology::{Start, Started};

/// What one scenario run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub description: String,
    pub file: Option<PathBuf>,
    pub checks: Vec<Check>,
    pub spans: Vec<Span>,
    pub metrics: BTreeMap<String, BTreeMap<String, u64>>,
    /// Envoy name → func-e run directory (logs, config dump).
    pub envoy_log_dirs: BTreeMap<String, PathBuf>,
    /// Kept run directory (failed runs, or `keep_logs`).
    pub run_dir: Option<PathBuf>,
    pub elapsed: Duration,
    /// The spans the real collector stored (`real_collector:` scenarios), read back after
    /// quiescence; `Span::envoy` is the service name.
    pub collected: Vec<Span>,
    /// The real collector and its query API address, if the scenario used one.
    pub collector: Option<(RealCollectorKind, SocketAddr)>,
}

/// Live addresses handed to a run's `on_live` hook (used by `demo`).
pub struct Live<'a> {
    pub admin: BTreeMap<String, String>,
    pub listeners: BTreeMap<String, SocketAddr>,
    pub scenario: &'a Scenario,
    /// The real collector (kind, query API address), if any.
    pub collector: Option<(RealCollectorKind, SocketAddr)>,
    /// What it stored (already read back).
    pub collected: &'a [Span],
}

/// What a run holds between its phases. Fields drop in order, so whatever is still running when
/// a phase gives up stops Envoys first, then the collectors and apps they talk to.
struct Run<'a> {
    sc: &'a Scenario,
    tools: &'a Tools,
    run_dir: &'a Path,
    outcome: &'a mut Outcome,
    obs: Observations,
    /// Envoy name → listener address, filled in as each Envoy becomes ready.
    routes: RouteTable,
    /// Envoy name → the collector endpoint its spans go to.
    endpoints: BTreeMap<String, SocketAddr>,
    started: Vec<Started>,
    real: Option<RealCollector>,
    upstreams: BTreeMap<String, UpstreamServer>,
    collector: Collector,
    /// Closed ports the `app` clusters of unreachable upstreams point at, reserved until the end.
    reserved: Vec<ClosedPort>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.pass)
    }

    fn empty(name: &str) -> Outcome {
        Outcome {
            name: name.to_string(),
            description: String::new(),
            file: None,
            checks: Vec::new(),
            spans: Vec::new(),
            metrics: BTreeMap::new(),
            envoy_log_dirs: BTreeMap::new(),
            run_dir: None,
            elapsed: Duration::ZERO,
            collected: Vec::new(),
            collector: None,
        }
    }

    fn invalid(name: &str, file: Option<&Path>, err: String) -> Outcome {
        let mut o = Outcome::empty(name);
        o.file = file.map(Path::to_path_buf);
        o.checks.push(Check::fail("scenario is valid", err));
        o
    }
}

impl<'a> Run<'a> {
    fn new(
        sc: &'a Scenario,
        tools: &'a Tools,
        run_dir: &'a Path,
        outcome: &'a mut Outcome,
        real: Option<RealCollector>,
    ) -> Run<'a> {
        Run {
            sc,
            tools,
            run_dir,
            outcome,
            obs: Observations::default(),
            routes: RouteTable::default(),
            endpoints: BTreeMap::new(),
            started: Vec::new(),
            real,
            upstreams: BTreeMap::new(),
            collector: Collector::new(&sc.collector),
            reserved: Vec::new(),
        }
    }

    fn send_requests(&mut self) {
        let faults = self.collector.fault_counter();
        self.collector.requests_starting();
        let (tools, run_dir, started) = (self.tools, self.run_dir, &self.started);
        let reload = |rl: &ReloadSpec| bootstrap::reload_envoy(tools, run_dir, started, rl);
        let ctx = SendContext {
            routes: &self.routes,
            upstreams: &self.upstreams,
            faults: &faults,
            reload: &reload,
        };
        load::send_requests(self.sc, &ctx, &mut self.outcome.checks);
        self.collector.requests_done();
    }

    /// Waits for quiescence, then reads what the Envoys counted and the real collector stored.
    /// `t_start` (µs) opens the window every span must lie in.
    fn observe(&mut self, t_start: u64) {
        let timeout = Duration::from_millis(self.sc.quiescence_timeout_ms.unwrap_or(15_000));
        let checks = &mut self.outcome.checks;
        // Counters reach /stats on each Envoy's tick: hold still past the slowest one, plus a
        // poll and a margin for a late timer.
        let hold = self
            .started
            .iter()
            .map(|s| bootstrap::publish_period(self.tools, &s.spec))
            .max()
            .unwrap_or_default()
            + Duration::from_millis(250);
        checks.push(stats::wait_quiescent(&self.started, hold, timeout));
        self.obs.window_us = Some((t_start, now_us()));
        stats::read_stats(&self.started, &self.sc.expect, &mut self.obs, checks);
        self.read_back();
    }

    fn live(&self) -> Live<'_> {
        Live {
            admin: self
                .started
                .iter()
                .filter(|s| s.ready)
                .filter_map(|s| Some((s.spec.name.clone(), s.proc.admin.clone()?)))
                .collect(),
            listeners: self
                .routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            scenario: self.sc,
            collector: self.outcome.collector,
            collected: self
                .obs
                .collected
                .as_ref()
                .map(|c| c.spans.as_slice())
                .unwrap_or(&[]),
        }
    }

    /// Stops the Envoys and the real collector, then collects logs, app records and the fake
    /// collector's posts (stopping first, so nothing arrives after the read).
    fn tear_down(mut self) -> Observations {
        let log_dirs = &mut self.outcome.envoy_log_dirs;
        for s in &mut self.started {
            s.proc.stop();
            self.obs.logs.insert(s.spec.name.clone(), s.proc.logs());
            if let Some(d) = s.proc.run_log_dir() {
                log_dirs.insert(s.spec.name.clone(), d);
            }
        }
        self.started.clear();
        if let Some(mut c) = self.real.take() {
            c.stop();
            log_dirs.insert(format!("({} collector)", c.kind.name()), c.log.clone());
        }
        let obs = &mut self.obs;
        for (name, u) in &self.upstreams {
            obs.upstreams.insert(name.clone(), u.records());
        }
        obs.posts = self.collector.posts();
        obs.collector_max_concurrent = self.collector.max_concurrent();
        obs.collector_fault = self.sc.collector.fault_name();
        obs.fake_collector = self.sc.real_collector.is_none();
        obs.timeline = self.collector.timeline();
        for p in &obs.posts {
            if let Ok(list) = &p.spans {
                for s in list {
                    obs.spans.push(Span::new(&p.envoy, s.clone()));
                }
            }
        }
        std::mem::take(&mut self.obs)
    }
}

/// Loads and runs a scenario file.
pub fn run_file(path: &Path, tools: &Tools) -> Outcome {
    let fallback = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match Scenario::load(path) {
        Ok(sc) => {
            let mut o = run_scenario(&sc, tools, &mut |_| {});
            o.file = Some(path.to_path_buf());
            o
        }
        Err(e) => Outcome::invalid(&fallback, Some(path), e),
    }
}

/// Runs scenario files with up to `jobs` in parallel, calling `on_done` as each finishes
/// (serialised). Returns the outcomes in input order.
pub fn run_many(
    paths: &[PathBuf],
    tools: &Tools,
    jobs: usize,
    on_done: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; paths.len()]);
    let print_lock = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(paths.len().max(1)) {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(p) = paths.get(i) else { break };
                let o = run_file(p, tools);
                {
                    let _g = print_lock.lock().unwrap_or_else(|p| p.into_inner());
                    on_done(&o);
                }
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(o);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Runs a parsed scenario. `on_live` is called after requests and quiescence, while everything is
/// still running.
pub fn run_scenario(sc: &Scenario, tools: &Tools, on_live: &mut dyn FnMut(&Live)) -> Outcome {
    let t0 = Instant::now();
    let mut outcome = Outcome::empty(&sc.name);
    outcome.description = sc.description.clone();
    let prepared = check_ready(sc, tools)
        .and_then(|()| run_dir(&tools.repo, &sc.name).map_err(|e| Check::fail("run directory", e)));
    let run_dir = match prepared {
        Ok(d) => d,
        Err(check) => {
            outcome.checks.push(check);
            return outcome;
        }
    };
    let (obs, aborted) = execute(sc, tools, &run_dir, &mut outcome, on_live);
    if aborted {
        // The topology never came up: evaluating expectations would only add consequential failures.
        outcome.checks.push(Check::fail(
            "expectations evaluated",
            "skipped because the topology did not come up (see the failures above)",
        ));
    } else {
        outcome.checks.extend(evaluate(&sc.expect, &obs));
    }
    outcome.spans = obs.spans;
    outcome.metrics = obs.metrics;
    if let Some(c) = obs.collected {
        outcome.collected = c.spans;
    }
    outcome.elapsed = t0.elapsed();
    save_spans(&run_dir, &outcome);
    if outcome.passed() && !tools.keep_logs {
        let _ = std::fs::remove_dir_all(&run_dir);
        outcome.envoy_log_dirs.clear();
    } else {
        outcome.run_dir = Some(run_dir);
    }
    outcome
}

/// The scenario is valid and every tool it needs is there; otherwise the one failed check.
fn check_ready(sc: &Scenario, tools: &Tools) -> Result<(), Check> {
    sc.validate()
        .map_err(|e| Check::fail("scenario is valid", e))?;
    tools
        .require(true)
        .map_err(|e| Check::fail("tools are available", e))?;
    if let Some(kind) = sc.real_collector {
        tools
            .collectors
            .require(kind)
            .map_err(|e| Check::fail(format!("real collector {} available", kind.name()), e))?;
    }
    Ok(())
}

/// Sets everything up, sends the requests and reads what they produced. Returns the
/// observations and whether the run was aborted because the topology never came up.
fn execute(
    sc: &Scenario,
    tools: &Tools,
    run_dir: &Path,
    outcome: &mut Outcome,
    on_live: &mut dyn FnMut(&Live),
) -> (Observations, bool) {
    // The real collector starts first: its (JVM) start overlaps the Envoys'.
    let real = match spawn_real_collector(sc, tools, run_dir) {
        Ok(real) => real,
        Err(check) => {
            outcome.checks.push(check);
            return (Observations::default(), true);
        }
    };
    outcome.collector = real.as_ref().map(|c| (c.kind, c.query));
    let mut run = Run::new(sc, tools, run_dir, outcome, real);
    if !run.start_upstreams() || !run.make_endpoints() {
        return (Observations::default(), true);
    }
    let t_start = now_us();
    let aborted = match run.start_envoys() {
        Start::Failed => return (Observations::default(), true),
        Start::Aborted => true,
        Start::Up => !run.wait_real_collector(),
    };
    if !aborted {
        run.send_requests();
        run.observe(t_start);
        on_live(&run.live());
    }
    (run.tear_down(), aborted)
}

fn spawn_real_collector(
    sc: &Scenario,
    tools: &Tools,
    run_dir: &Path,
) -> Result<Option<RealCollector>, Check> {
    let Some(kind) = sc.real_collector else {
        return Ok(None);
    };
    RealCollector::spawn(
        kind,
        &tools.collectors,
        &run_dir.join(kind.name()),
        tools.well_known_ports,
    )
    .map(Some)
    .map_err(|e| Check::fail(format!("real collector {} started", kind.name()), e))
}

/// Writes the spans the fake collector received (and the real one stored) into the run
/// directory, for reading a kept run.
fn save_spans(run_dir: &Path, outcome: &Outcome) {
    let raw = |spans: &[Span]| {
        serde_json::to_string_pretty(&spans.iter().map(|s| s.raw.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    if !outcome.collected.is_empty() {
        let _ = std::fs::write(run_dir.join("collected.json"), raw(&outcome.collected));
    }
    let _ = std::fs::write(run_dir.join("spans.json"), raw(&outcome.spans));
}
