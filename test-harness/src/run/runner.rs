//! Runs one scenario end to end: servers, Envoys, requests, quiescence, evaluation.

use crate::model::expect::{
    evaluate, expected_stored, metric_value, Check, Collected, Observations,
};
use crate::model::scenario::{EnvoySpec, RealCollectorKind, ReloadSpec, Scenario};
use crate::model::spans::{truncate, Span};
use crate::run::collectors::RealCollector;
use crate::run::config::{
    load_shipped, patch_config, plugin_config_string, render_plugin_config, set_failure_policy,
    Patch, PluginConfig,
};
use crate::run::envoy::{EnvoyProcess, Launch, StartOutcome};
use crate::run::load::{send_requests, SendContext};
use crate::run::upstream::{closed_port, Collector, RouteTable, UpstreamServer};
use crate::tools::Tools;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

fn sanitize(name: &str) -> String {
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

fn make_run_dir(repo: &Path, name: &str) -> Result<PathBuf, String> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let dir = repo.join(".harness-runs").join(format!(
        "{}-{secs}-{}-{}",
        sanitize(name),
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    Ok(dir)
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

struct Started {
    spec: EnvoySpec,
    proc: EnvoyProcess,
    ready: bool,
    /// Where its `app` and `zipkin` clusters point (a reload keeps them).
    app: SocketAddr,
    zipkin: SocketAddr,
}

/// Replaces the listener of a running `lds: true` Envoy with one whose plugin configuration is
/// its own deep-merged with `rl.plugin_config`.
fn reload_envoy(
    tools: &Tools,
    run_dir: &Path,
    started: &[Started],
    rl: &ReloadSpec,
) -> Result<String, String> {
    let s = started
        .iter()
        .find(|s| s.ready && s.spec.name == rl.envoy)
        .ok_or_else(|| format!("envoy {} is not running", rl.envoy))?;
    let mut spec = s.spec.clone();
    let mut pc = spec
        .plugin_config
        .take()
        .unwrap_or_else(|| serde_json::json!({}));
    crate::run::config::deep_merge(&mut pc, &rl.plugin_config);
    spec.plugin_config = Some(pc);
    let mut doc = envoy_config(tools, &spec, s.app, s.zipkin)?;
    let envoy_dir = std::fs::canonicalize(run_dir.join(sanitize(&spec.name)))
        .map_err(|e| format!("run dir of {}: {e}", spec.name))?;
    let dir = crate::run::lds::watched_dir(&envoy_dir);
    let resp = crate::run::lds::split_listeners(&mut doc, &dir)?;
    crate::run::lds::apply(&s.proc, &dir, &resp)
}

/// Runs a parsed scenario. `on_live` is called after requests and quiescence, while everything is
/// still running.
pub fn run_scenario(sc: &Scenario, tools: &Tools, on_live: &mut dyn FnMut(&Live)) -> Outcome {
    let t0 = Instant::now();
    let mut outcome = Outcome::empty(&sc.name);
    outcome.description = sc.description.clone();
    if let Err(e) = sc.validate() {
        outcome.checks.push(Check::fail("scenario is valid", e));
        return outcome;
    }
    if let Err(e) = tools.require(true) {
        outcome.checks.push(Check::fail("tools are available", e));
        return outcome;
    }
    if let Some(kind) = sc.real_collector {
        if let Err(e) = tools.collectors.require(kind) {
            outcome.checks.push(Check::fail(
                format!("real collector {} available", kind.name()),
                e,
            ));
            return outcome;
        }
    }
    let run_dir = match make_run_dir(&tools.repo, &sc.name) {
        Ok(d) => d,
        Err(e) => {
            outcome.checks.push(Check::fail("run directory", e));
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
    if !outcome.collected.is_empty() {
        let _ = std::fs::write(
            run_dir.join("collected.json"),
            serde_json::to_string_pretty(
                &outcome
                    .collected
                    .iter()
                    .map(|s| s.raw.clone())
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
        );
    }
    let _ = std::fs::write(
        run_dir.join("spans.json"),
        serde_json::to_string_pretty(
            &outcome
                .spans
                .iter()
                .map(|s| s.raw.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default(),
    );
    if outcome.passed() && !tools.keep_logs {
        let _ = std::fs::remove_dir_all(&run_dir);
        outcome.envoy_log_dirs.clear();
    } else {
        outcome.run_dir = Some(run_dir);
    }
    outcome
}

fn plugin_of(e: &EnvoySpec) -> PluginConfig {
    match &e.plugin_config_raw {
        Some(raw) => PluginConfig::Raw(raw.clone()),
        None => PluginConfig::Merge(e.plugin_config.clone()),
    }
}

/// The shipped config of one Envoy, patched.
fn envoy_config(
    tools: &Tools,
    e: &EnvoySpec,
    app: SocketAddr,
    zipkin: SocketAddr,
) -> Result<serde_yaml::Value, String> {
    let mut doc = load_shipped(&tools.repo, e.config.file_name())?;
    patch_config(
        &mut doc,
        &Patch {
            admin_port: 0,
            listener_port: 0,
            app,
            zipkin,
            wasm_path: match &e.module {
                Some(m) => tools.repo.join(m).display().to_string(),
                None => tools.wasm_abs().display().to_string(),
            },
            plugin: plugin_of(e),
            node: node_json(e),
        },
    )?;
    if let Some(policy) = &e.failure_policy {
        set_failure_policy(&mut doc, policy)?;
    }
    Ok(doc)
}

/// Generates the patched config for one Envoy and writes it to `path` (with `lds: true`, its
/// listeners go to `lds/listeners.yaml` next to it).
pub fn write_envoy_config(
    tools: &Tools,
    e: &EnvoySpec,
    app: SocketAddr,
    zipkin: SocketAddr,
    path: &Path,
) -> Result<(), String> {
    let mut doc = envoy_config(tools, e, app, zipkin)?;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    if e.lds {
        let dir = path
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .ok_or_else(|| format!("no directory for {}", path.display()))?;
        let dir = crate::run::lds::watched_dir(&dir);
        let resp = crate::run::lds::split_listeners(&mut doc, &dir)?;
        crate::run::lds::write_listeners(&dir, &resp)?;
    }
    let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    std::fs::write(
        path,
        format!(
            "# generated by test-harness from envoy/{} for envoy `{}`\n{text}",
            e.config.file_name(),
            e.name
        ),
    )
    .map_err(|e| format!("write {}: {e}", path.display()))
}

/// The bootstrap `node:` block for an Envoy, if the scenario gives one.
fn node_json(e: &EnvoySpec) -> Option<serde_json::Value> {
    let n = e.node.as_ref()?;
    let mut m = serde_json::Map::new();
    if let Some(id) = &n.id {
        m.insert("id".into(), id.clone().into());
    }
    if let Some(c) = &n.cluster {
        m.insert("cluster".into(), c.clone().into());
    }
    if let Some(md) = &n.metadata {
        m.insert("metadata".into(), md.clone());
    }
    Some(serde_json::Value::Object(m))
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
        let name = s.spec.name.clone();
        let outcome_ = s.proc.wait_ready(Duration::from_secs(30));
        if let Some(d) = s.proc.run_log_dir() {
            log_dirs.insert(name.clone(), d);
        }
        match (outcome_, s.spec.expect_start_failure) {
            (StartOutcome::Ready, false) => match s.proc.listener_addr() {
                Ok(addr) => {
                    s.ready = true;
                    routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), addr);
                    checks.push(Check::pass(
                        format!("envoy {name} ({}) ready", s.spec.config.file_name()),
                        format!(
                            "admin {} listener {addr}",
                            s.proc.admin.clone().unwrap_or_default()
                        ),
                    ));
                }
                Err(e) => {
                    abort = true;
                    checks.push(Check::fail(format!("envoy {name} listener address"), e));
                }
            },
            (StartOutcome::Ready, true) => {
                s.ready = true;
                checks.push(Check::fail(
                    format!("envoy {name} refuses to start"),
                    "Envoy became ready (GET /ready = LIVE)",
                ));
            }
            (StartOutcome::Exited(st), true) => checks.push(Check::pass(
                format!("envoy {name} refuses to start"),
                format!(
                    "exited during startup ({})",
                    st.map_or("unknown status".into(), |s| s.to_string())
                ),
            )),
            (StartOutcome::Exited(st), false) => {
                abort = true;
                checks.push(Check::fail(
                    format!("envoy {name} ready"),
                    format!(
                        "start failure: exited ({}); log excerpt:\n{}",
                        st.map_or("unknown status".into(), |s| s.to_string()),
                        indent(&s.proc.log_excerpt(12), "        ")
                    ),
                ));
            }
            (StartOutcome::TimedOut, expect_fail) => {
                abort = abort || !expect_fail;
                checks.push(Check::fail(
                    format!(
                        "envoy {name} {}",
                        if expect_fail {
                            "refuses to start"
                        } else {
                            "ready"
                        }
                    ),
                    format!(
                        "neither ready nor exited after 30s; log excerpt:\n{}",
                        indent(&s.proc.log_excerpt(12), "        ")
                    ),
                ));
            }
        }
    }
    abort
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// True when the Envoy's merged plugin configuration exports OTLP JSON (`collector.format`).
fn exports_otlp(tools: &Tools, e: &EnvoySpec) -> bool {
    let rendered = load_shipped(&tools.repo, e.config.file_name())
        .and_then(|doc| plugin_config_string(&doc))
        .and_then(|t| render_plugin_config(&t, &plugin_of(e)));
    rendered
        .ok()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
        .and_then(|v| {
            v.get("collector")
                .and_then(|c| c.get("format"))
                .and_then(|f| f.as_str())
                .map(|f| f == "otlp_json")
        })
        .unwrap_or(false)
}

/// Opens every stored trace in the Zipkin UI with headless Chromium (the first one also
/// screenshotted when asked).
fn zipkin_ui_checks(
    c: &RealCollector,
    ui: &crate::model::scenario::ZipkinUiExpect,
    collected: &crate::model::expect::Collected,
    run_dir: &Path,
) -> Vec<Check> {
    let mut traces: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for s in &collected.spans {
        let t = traces.entry(s.trace_id()).or_default();
        t.0 += 1;
        t.1.insert(s.field("serviceName").unwrap_or_default());
    }
    if traces.is_empty() {
        return vec![Check::fail(
            "zipkin UI (headless Chromium)",
            "no trace stored to look at",
        )];
    }
    let override_shot = std::env::var_os("MESHTRACE_UI_SCREENSHOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    // A control: the same check on a trace id nobody reported must fail, or it proves nothing.
    let control = crate::run::ui::ZipkinPage {
        base: format!("http://{}", c.query),
        trace_id: "0000000000000000000000000000beef".to_string(),
        spans: 1,
        services: vec!["nobody".to_string()],
        screenshot: None,
    };
    let mut checks = vec![match crate::run::ui::check_zipkin_trace(&control) {
        Ok(d) => Check::fail(
            "zipkin UI check fails for a trace that does not exist (control)",
            format!("it passed: {d}"),
        ),
        Err(why) => Check::pass(
            "zipkin UI check fails for a trace that does not exist (control)",
            crate::model::spans::truncate(&why, 160),
        ),
    }];
    checks.extend(
        traces
            .into_iter()
            .enumerate()
            .map(|(i, (trace_id, (spans, services)))| {
                let screenshot = (i == 0)
                    .then(|| {
                        override_shot
                            .clone()
                            .or_else(|| ui.screenshot.as_ref().map(|f| run_dir.join(f)))
                    })
                    .flatten();
                let page = crate::run::ui::ZipkinPage {
                    base: format!("http://{}", c.query),
                    trace_id: trace_id.clone(),
                    spans,
                    services: services.into_iter().collect(),
                    screenshot,
                };
                let label = format!("zipkin UI (headless Chromium) shows trace {trace_id}");
                match crate::run::ui::check_zipkin_trace(&page) {
                    Ok(detail) => Check::pass(label, detail),
                    Err(why) => Check::fail(label, why),
                }
            }),
    );
    checks
}

/// Polls the real collector until the number of stored spans is `expected` and stable across
/// two polls (or stable for ~1.5 s at another number, or 10 s pass).
fn read_collected(c: &RealCollector, expected: u64) -> Collected {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    let mut prev: Option<usize> = None;
    let mut stable = 0;
    let mut spans = Vec::new();
    let mut error: Option<String>;
    loop {
        std::thread::sleep(Duration::from_millis(if prev.is_none() {
            150
        } else {
            250
        }));
        match c.read_spans() {
            Ok(v) => {
                error = None;
                let n = v.len();
                stable = if prev == Some(n) { stable + 1 } else { 0 };
                prev = Some(n);
                spans = v;
                if (n as u64 == expected && stable >= 1) || stable >= 6 {
                    break;
                }
            }
            Err(e) => error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let services = match c.services() {
        Ok(s) => s,
        Err(e) => {
            error.get_or_insert(e);
            Vec::new()
        }
    };
    Collected {
        kind: c.kind.name().to_string(),
        spans: spans
            .into_iter()
            .map(|raw| {
                let svc = raw
                    .get("localEndpoint")
                    .and_then(|l| l.get("serviceName"))
                    .and_then(|s| s.as_str())
                    .unwrap_or("?")
                    .to_string();
                Span::new(&svc, raw)
            })
            .collect(),
        services,
        error,
        ingest: c.ingest_stats(),
        waited_ms: t0.elapsed().as_millis() as u64,
    }
}

fn execute(
    sc: &Scenario,
    tools: &Tools,
    run_dir: &Path,
    outcome: &mut Outcome,
    on_live: &mut dyn FnMut(&Live),
) -> (Observations, bool) {
    let mut obs = Observations::default();
    let checks = &mut outcome.checks;
    let routes: RouteTable = RouteTable::default();
    // The real collector starts first: its (JVM) start overlaps the Envoys'.
    let mut real = match sc.real_collector {
        None => None,
        Some(kind) => match RealCollector::spawn(
            kind,
            &tools.collectors,
            &run_dir.join(kind.name()),
            tools.well_known_ports,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                checks.push(Check::fail(
                    format!("real collector {} started", kind.name()),
                    e,
                ));
                return (obs, true);
            }
        },
    };
    outcome.collector = real.as_ref().map(|c| (c.kind, c.query));
    let report_to = real.as_ref().map(|c| c.zipkin_in);
    let mut collector = Collector::new(&sc.collector);
    let mut upstreams: BTreeMap<String, UpstreamServer> = BTreeMap::new();
    for u in &sc.upstreams {
        match UpstreamServer::start(u, routes.clone(), report_to) {
            Ok(s) => {
                upstreams.insert(u.name.clone(), s);
            }
            Err(e) => {
                checks.push(Check::fail(format!("upstream {} started", u.name), e));
                return (obs, true);
            }
        }
    }
    // One collector endpoint per Envoy, made before any Envoy starts: a relay Envoy
    // (`collector_via`) forwards to the endpoint of the Envoy it relays for.
    let mut endpoints: BTreeMap<String, SocketAddr> = BTreeMap::new();
    for e in &sc.envoys {
        let ep = match &real {
            Some(c) => Ok(c.ingest(exports_otlp(tools, e))),
            None => collector.endpoint_for(&e.name),
        };
        match ep {
            Ok(a) => {
                endpoints.insert(e.name.clone(), a);
            }
            Err(err) => {
                checks.push(Check::fail(
                    format!("collector endpoint for {}", e.name),
                    err,
                ));
                return (obs, true);
            }
        }
    }
    let t_start = now_us();

    // Launch the Envoys in waves: an Envoy starts once the Envoys it exports through
    // (`collector_via`) or forwards to (`upstream_envoy`) are ready and their listeners known.
    let waves = match sc.start_waves() {
        Ok(w) => w,
        Err(e) => {
            checks.push(Check::fail("envoy start order", e));
            return (obs, true);
        }
    };
    let mut started: Vec<Started> = Vec::new();
    // Closed ports the `app` clusters of unreachable upstreams point at, reserved until the end.
    let mut reserved = Vec::new();
    let mut abort = false;
    let listener_of = |name: &str, what: &str| {
        routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .ok_or_else(|| format!("{what} envoy {name} has no listener"))
    };
    for wave in waves {
        let first = started.len();
        for e in wave {
            let up = sc.upstream_of(e);
            obs.envoy_upstream.insert(e.name.clone(), up.clone());
            let app = match (sc.relayed_by(&e.name), &e.upstream_envoy, up.as_ref()) {
                (Some(src), _, _) => Ok(endpoints[&src.name]),
                (None, Some(next), _) => listener_of(next, "upstream"),
                (None, None, Some(u)) => upstreams
                    .get(u)
                    .map(|s| s.addr)
                    .ok_or_else(|| format!("no upstream {u}")),
                (None, None, None) => closed_port().map_err(|e| e.to_string()).map(|p| {
                    let addr = p.addr;
                    reserved.push(p);
                    addr
                }),
            };
            let zipkin = match &e.collector_via {
                None => Ok(endpoints[&e.name]),
                Some(via) => listener_of(via, "relay"),
            };
            match app
                .and_then(|app| Ok((app, zipkin?)))
                .and_then(|(app, zipkin)| {
                    launch_envoy(tools, run_dir, e, app, zipkin).map(|p| (p, app, zipkin))
                }) {
                Ok((proc, app, zipkin)) => started.push(Started {
                    spec: e.clone(),
                    proc,
                    ready: false,
                    app,
                    zipkin,
                }),
                Err(err) => {
                    checks.push(Check::fail(format!("envoy {} launched", e.name), err));
                    return (obs, true);
                }
            }
        }
        abort |= wait_started(
            &mut started[first..],
            &routes,
            checks,
            &mut outcome.envoy_log_dirs,
        );
        if abort {
            break;
        }
    }
    if let (false, Some(c)) = (abort, real.as_mut()) {
        match c.wait_ready(Duration::from_secs(60)) {
            Ok(took) => checks.push(Check::pass(
                format!("real collector {} ready", c.kind.name()),
                format!(
                    "query http://{} ingest {}{} after {} ms",
                    c.query,
                    c.zipkin_in,
                    c.otlp_in.map(|o| format!(" otlp {o}")).unwrap_or_default(),
                    took.as_millis()
                ),
            )),
            Err(e) => {
                abort = true;
                checks.push(Check::fail(
                    format!("real collector {} ready", c.kind.name()),
                    e,
                ));
            }
        }
    }

    if !abort {
        let faults = collector.fault_counter();
        let reload = |rl: &ReloadSpec| reload_envoy(tools, run_dir, &started, rl);
        let ctx = SendContext {
            routes: &routes,
            upstreams: &upstreams,
            faults: &faults,
            reload: &reload,
        };
        send_requests(sc, &ctx, checks);
        let timeout = Duration::from_millis(sc.quiescence_timeout_ms.unwrap_or(15_000));
        checks.push(wait_quiescent(&started, timeout));
        obs.window_us = Some((t_start, now_us()));
        for s in started.iter().filter(|s| s.ready) {
            let name = s.spec.name.clone();
            match s.proc.stats("meshtrace") {
                Ok(st) => {
                    obs.metrics.insert(name.clone(), st);
                }
                Err(e) => checks.push(Check::fail(format!("stats of {name}"), e)),
            }
            if sc.expect.prometheus.contains_key(&name) {
                match s.proc.prometheus() {
                    Ok(text) => {
                        obs.prometheus.insert(name.clone(), text);
                    }
                    Err(e) => checks.push(Check::fail(format!("/stats/prometheus of {name}"), e)),
                }
            }
            if sc.expect.envoy_stats.contains_key(&name) {
                match s.proc.stats("") {
                    Ok(st) => {
                        obs.all_stats.insert(name.clone(), st);
                    }
                    Err(e) => checks.push(Check::fail(format!("stats of {name}"), e)),
                }
            }
        }
        if let Some(c) = &real {
            for (name, u) in &upstreams {
                obs.upstreams.insert(name.clone(), u.records());
            }
            obs.collected = Some(read_collected(c, expected_stored(&obs)));
            let ui = sc
                .expect
                .collected
                .as_ref()
                .and_then(|e| e.zipkin_ui.as_ref());
            if let (Some(ui), Some(collected)) = (ui, &obs.collected) {
                checks.extend(zipkin_ui_checks(c, ui, collected, run_dir));
            }
        }
        let live = Live {
            admin: started
                .iter()
                .filter(|s| s.ready)
                .filter_map(|s| Some((s.spec.name.clone(), s.proc.admin.clone()?)))
                .collect(),
            listeners: routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            scenario: sc,
            collector: outcome.collector,
            collected: obs
                .collected
                .as_ref()
                .map(|c| c.spans.as_slice())
                .unwrap_or(&[]),
        };
        on_live(&live);
    }

    for s in &mut started {
        s.proc.stop();
        obs.logs.insert(s.spec.name.clone(), s.proc.logs());
        if let Some(d) = s.proc.run_log_dir() {
            outcome.envoy_log_dirs.insert(s.spec.name.clone(), d);
        }
    }
    drop(started);
    if let Some(mut c) = real.take() {
        c.stop();
        outcome
            .envoy_log_dirs
            .insert(format!("({} collector)", c.kind.name()), c.log.clone());
    }
    for (name, u) in &upstreams {
        obs.upstreams.insert(name.clone(), u.records());
    }
    obs.posts = collector.posts();
    obs.collector_max_concurrent = collector.max_concurrent();
    obs.collector_fault = sc.collector.fault;
    for p in &obs.posts {
        if let Ok(list) = &p.spans {
            for s in list {
                obs.spans.push(Span::new(&p.envoy, s.clone()));
            }
        }
    }
    drop(upstreams);
    drop(collector);
    drop(reserved);
    (obs, abort)
}

fn indent(text: &str, pre: &str) -> String {
    text.lines()
        .map(|l| format!("{pre}{}", truncate(l, 400)))
        .collect::<Vec<_>>()
        .join("\n")
}

const BALANCE: [&str; 4] = [
    "spans_sampled",
    "spans_recorded",
    "spans_exported",
    "spans_dropped",
];
const QUIESCENT: &str =
    "quiescent (spans_recorded >= spans_sampled, spans_recorded == spans_exported + spans_dropped, stable)";

/// Polls every ready Envoy until every sampled stream has recorded its span(s) (one, or two with
/// `span_shape: server_client`), every recorded span is exported or dropped, and all meshtrace
/// counters are unchanged across two polls 150 ms apart.
fn wait_quiescent(started: &[Started], timeout: Duration) -> Check {
    let deadline = Instant::now() + timeout;
    let t0 = Instant::now();
    let mut prev: Option<BTreeMap<String, BTreeMap<String, u64>>> = None;
    loop {
        let mut snap = BTreeMap::new();
        let mut err = None;
        for s in started.iter().filter(|s| s.ready) {
            match s.proc.stats("meshtrace_") {
                Ok(st) => {
                    snap.insert(s.spec.name.clone(), st);
                }
                Err(e) => err = Some(format!("{}: {e}", s.spec.name)),
            }
        }
        let balanced = err.is_none()
            && snap.values().all(|st| {
                let [sampled, recorded, exported, dropped] = BALANCE.map(|k| metric_value(st, k));
                recorded >= sampled && recorded == exported + dropped
            });
        if balanced && prev.as_ref() == Some(&snap) {
            return Check::pass(QUIESCENT, format!("after {} ms", t0.elapsed().as_millis()));
        }
        if Instant::now() >= deadline {
            let numbers = snap
                .iter()
                .map(|(n, st)| {
                    let [a, r, b, c] = BALANCE.map(|k| metric_value(st, k));
                    format!("{n}: sampled={a} recorded={r} exported={b} dropped={c}")
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Check::fail(
                QUIESCENT,
                format!(
                    "not quiescent after {} ms: {numbers}{}",
                    timeout.as_millis(),
                    err.map(|e| format!("; stats error: {e}"))
                        .unwrap_or_default()
                ),
            );
        }
        prev = Some(snap);
        std::thread::sleep(Duration::from_millis(150));
    }
}
