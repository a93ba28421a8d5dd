//! Bringing a scenario's topology up: upstream apps, one collector endpoint per Envoy, the
//! Envoys in start waves, and the real collector's readiness.

use super::bootstrap::{exports_otlp, write_envoy_config};
use super::Run;
use crate::model::expect::Check;
use crate::model::scenario::EnvoySpec;
use crate::model::spans::truncate;
use crate::run::envoy::{EnvoyProcess, Launch, StartOutcome};
use crate::run::rundir::sanitize;
use crate::run::upstream::{closed_port, RouteTable, UpstreamServer};
use crate::tools::Tools;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// An Envoy that was launched (ready or not).
pub(super) struct Started {
    pub(super) spec: EnvoySpec,
    pub(super) proc: EnvoyProcess,
    pub(super) ready: bool,
    /// Where its `app` and `zipkin` clusters point (a reload keeps them).
    pub(super) app: SocketAddr,
    pub(super) zipkin: SocketAddr,
}

/// How far starting the Envoys got.
pub(super) enum Start {
    /// Every Envoy is up (or refused to start, as expected).
    Up,
    /// An Envoy did not come up: tear down what runs, skip requests and evaluation.
    Aborted,
    /// An Envoy could not even be launched: give up at once.
    Failed,
}

impl Run<'_> {
    /// Starts every upstream app; false (with a failed check) if one cannot start.
    pub(super) fn start_upstreams(&mut self) -> bool {
        let report_to = self.real.as_ref().map(|c| c.zipkin_in);
        for u in &self.sc.upstreams {
            match UpstreamServer::start(u, self.routes.clone(), report_to) {
                Ok(s) => {
                    self.upstreams.insert(u.name.clone(), s);
                }
                Err(e) => {
                    let check = Check::fail(format!("upstream {} started", u.name), e);
                    self.outcome.checks.push(check);
                    return false;
                }
            }
        }
        true
    }

    /// Makes one collector endpoint per Envoy before any Envoy starts, because a relay Envoy
    /// (`collector_via`) forwards to the endpoint of the Envoy it relays for.
    pub(super) fn make_endpoints(&mut self) -> bool {
        for e in &self.sc.envoys {
            let ep = match &self.real {
                Some(c) => Ok(c.ingest(exports_otlp(self.tools, e))),
                None => self.collector.endpoint_for(&e.name),
            };
            match ep {
                Ok(a) => {
                    self.endpoints.insert(e.name.clone(), a);
                }
                Err(err) => {
                    let check = Check::fail(format!("collector endpoint for {}", e.name), err);
                    self.outcome.checks.push(check);
                    return false;
                }
            }
        }
        true
    }

    /// Launches the Envoys in waves: an Envoy starts once the Envoys it exports through
    /// (`collector_via`) or forwards to (`upstream_envoy`) are ready and their listeners known.
    pub(super) fn start_envoys(&mut self) -> Start {
        let waves = match self.sc.start_waves() {
            Ok(w) => w,
            Err(e) => {
                self.outcome
                    .checks
                    .push(Check::fail("envoy start order", e));
                return Start::Failed;
            }
        };
        for wave in waves {
            let first = self.started.len();
            for e in wave {
                if let Err(err) = self.launch(e) {
                    let check = Check::fail(format!("envoy {} launched", e.name), err);
                    self.outcome.checks.push(check);
                    return Start::Failed;
                }
            }
            let outcome = &mut *self.outcome;
            let started = &mut self.started[first..];
            if wait_started(
                started,
                &self.routes,
                &mut outcome.checks,
                &mut outcome.envoy_log_dirs,
            ) {
                return Start::Aborted;
            }
        }
        Start::Up
    }

    /// Waits for the real collector, if any; false (with a failed check) if it never gets ready.
    pub(super) fn wait_real_collector(&mut self) -> bool {
        let Some(c) = self.real.as_mut() else {
            return true;
        };
        let label = format!("real collector {} ready", c.kind.name());
        match c.wait_ready(Duration::from_secs(60)) {
            Ok(took) => {
                let detail = format!(
                    "query http://{} ingest {}{} after {} ms",
                    c.query,
                    c.zipkin_in,
                    c.otlp_in.map(|o| format!(" otlp {o}")).unwrap_or_default(),
                    took.as_millis()
                );
                self.outcome.checks.push(Check::pass(label, detail));
                true
            }
            Err(e) => {
                self.outcome.checks.push(Check::fail(label, e));
                false
            }
        }
    }

    /// Launches one Envoy with its `app` and `zipkin` clusters pointed where the scenario says.
    fn launch(&mut self, e: &EnvoySpec) -> Result<(), String> {
        let up = self.sc.upstream_of(e);
        self.obs.envoy_upstream.insert(e.name.clone(), up.clone());
        let app = match (self.sc.relayed_by(&e.name), &e.upstream_envoy, up.as_ref()) {
            (Some(src), _, _) => Ok(self.endpoints[&src.name]),
            (None, Some(next), _) => listener_of(&self.routes, next, "upstream"),
            (None, None, Some(u)) => self
                .upstreams
                .get(u)
                .map(|s| s.addr)
                .ok_or_else(|| format!("no upstream {u}")),
            (None, None, None) => closed_port().map_err(|e| e.to_string()).map(|p| {
                let addr = p.addr;
                self.reserved.push(p);
                addr
            }),
        };
        let zipkin = match &e.collector_via {
            None => Ok(self.endpoints[&e.name]),
            Some(via) => listener_of(&self.routes, via, "relay"),
        };
        let (app, zipkin) = (app?, zipkin?);
        let proc = launch_envoy(self.tools, self.run_dir, e, app, zipkin)?;
        self.started.push(Started {
            spec: e.clone(),
            proc,
            ready: false,
            app,
            zipkin,
        });
        Ok(())
    }
}

fn listener_of(routes: &RouteTable, name: &str, what: &str) -> Result<SocketAddr, String> {
    routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .copied()
        .ok_or_else(|| format!("{what} envoy {name} has no listener"))
}

fn launch_envoy(
    tools: &Tools,
    run_dir: &Path,
    e: &EnvoySpec,
    app: SocketAddr,
    zipkin: SocketAddr,
) -> Result<EnvoyProcess, String> {
    let dir = run_dir.join(sanitize(&e.name));
    let cfg = dir.join("envoy.yaml");
    write_envoy_config(tools, e, app, zipkin, &cfg)?;
    let name = sanitize(&e.name);
    EnvoyProcess::spawn(&Launch {
        service_node: match e.node.as_ref().and_then(|n| n.id.as_ref()) {
            Some(_) => None,
            None => Some(name.clone()),
        },
        name,
        config_path: cfg,
        work_dir: dir,
        envoy_bin: tools.envoy_bin(),
        func_e_bin: tools.func_e.clone(),
        concurrency: e.concurrency.unwrap_or(1),
        component_log_level: e
            .log_level
            .clone()
            .unwrap_or_else(|| "wasm:debug".to_string()),
        extra_args: e.extra_args.clone(),
    })
}

/// Waits for each of `started` to become ready (or to exit, for `expect_start_failure`),
/// recording checks and listener addresses. Returns true when the run must be aborted.
fn wait_started(
    started: &mut [Started],
    routes: &RouteTable,
    checks: &mut Vec<Check>,
    log_dirs: &mut BTreeMap<String, PathBuf>,
) -> bool {
    let mut abort = false;
    for s in started {
        let outcome = s.proc.wait_ready(Duration::from_secs(30));
        if let Some(d) = s.proc.run_log_dir() {
            log_dirs.insert(s.spec.name.clone(), d);
        }
        let (check, fatal) = judge_start(s, outcome, routes);
        abort |= fatal;
        checks.push(check);
    }
    abort
}

/// The check for how one Envoy's start went, and whether the run must be aborted.
fn judge_start(s: &mut Started, outcome: StartOutcome, routes: &RouteTable) -> (Check, bool) {
    let name = s.spec.name.clone();
    match (outcome, s.spec.expect_start_failure) {
        (StartOutcome::Ready, false) => match s.proc.listener_addr() {
            Ok(addr) => {
                s.ready = true;
                routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), addr);
                let label = format!("envoy {name} ({}) ready", s.spec.config.file_name());
                let admin = s.proc.admin.clone().unwrap_or_default();
                let detail = format!("admin {admin} listener {addr}");
                (Check::pass(label, detail), false)
            }
            Err(e) => (
                Check::fail(format!("envoy {name} listener address"), e),
                true,
            ),
        },
        (StartOutcome::Ready, true) => {
            s.ready = true;
            let check = Check::fail(
                format!("envoy {name} refuses to start"),
                "Envoy became ready (GET /ready = LIVE)",
            );
            (check, false)
        }
        (StartOutcome::Exited(st), true) => {
            let detail = format!("exited during startup ({})", describe_exit(st));
            (
                Check::pass(format!("envoy {name} refuses to start"), detail),
                false,
            )
        }
        (StartOutcome::Exited(st), false) => {
            let detail = format!(
                "start failure: exited ({}); log excerpt:\n{}",
                describe_exit(st),
                indent(&s.proc.log_excerpt(12), "        ")
            );
            (Check::fail(format!("envoy {name} ready"), detail), true)
        }
        (StartOutcome::TimedOut, expect_fail) => {
            let what = if expect_fail {
                "refuses to start"
            } else {
                "ready"
            };
            let detail = format!(
                "neither ready nor exited after 30s; log excerpt:\n{}",
                indent(&s.proc.log_excerpt(12), "        ")
            );
            (
                Check::fail(format!("envoy {name} {what}"), detail),
                !expect_fail,
            )
        }
    }
}

fn describe_exit(st: Option<ExitStatus>) -> String {
    st.map_or("unknown status".into(), |s| s.to_string())
}

fn indent(text: &str, pre: &str) -> String {
    text.lines()
        .map(|l| format!("{pre}{}", truncate(l, 400)))
        .collect::<Vec<_>>()
        .join("\n")
}
