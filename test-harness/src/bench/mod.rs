//! `make bench`: meshtrace's cost side by side with no filter, an empty proxy-wasm filter, the
//! propagation floor and Envoy's own tracers, in one run (bench/README.md has the method).
//!
//! Flow: configs (Envoy YAML per configuration) → one Envoy each, pinned to core 0, plus the sink
//! → rounds of load (wrk and the paced client on core 1, configurations interleaved) → samples →
//! report (Markdown, JSON, SVG). Nothing here asserts speed; `--smoke` only proves it all works.

pub mod configs;
pub mod load;
pub mod report;

use crate::process::{ports, Daemon};
use configs::{Config, Variant};
use report::{Memory, Sample};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The core Envoy under test runs on; load, sink and this harness use the other.
const ENVOY_CORE: usize = 0;
const LOAD_CORE: usize = 1;

#[derive(Debug, Clone)]
pub struct Options {
    pub envoy: PathBuf,
    pub meshtrace: PathBuf,
    pub empty: PathBuf,
    pub floor: PathBuf,
    /// Other meshtrace builds compared with `meshtrace` in the same run (name, module).
    pub alt: Vec<(String, PathBuf)>,
    /// Only the configurations whose name contains one of these (and `none`, the reference); all
    /// when empty. A partial run is a quick comparison: its results stay in the run directory.
    pub only: Vec<String>,
    pub wrk: PathBuf,
    pub rounds: usize,
    /// Seconds of each measured wrk window (wrk counts whole seconds).
    pub window: u32,
    /// Seconds of wrk before each window (0: none).
    pub warmup: u32,
    pub connections: u32,
    /// The fixed moderate rate of the latency runs (requests/s) and their length (s).
    pub paced_rate: f64,
    pub paced_secs: f64,
    /// Where results go (`bench/results`, or the run directory in smoke mode).
    pub out: PathBuf,
    pub smoke: bool,
}

impl Options {
    /// `make bench`'s defaults: 5 rounds of 5 s windows, 500 requests/s for 2 s.
    pub fn full(out: PathBuf) -> Options {
        Options {
            envoy: PathBuf::new(),
            meshtrace: PathBuf::new(),
            empty: PathBuf::new(),
            floor: PathBuf::new(),
            alt: Vec::new(),
            only: Vec::new(),
            wrk: PathBuf::from("wrk"),
            rounds: 5,
            window: 5,
            warmup: 1,
            connections: 16,
            paced_rate: 500.0,
            paced_secs: 2.0,
            out,
            smoke: false,
        }
    }

    /// Seconds long: one round, 1 s windows without warm-up; proves the bench works, measures nothing.
    pub fn smoke(mut self) -> Options {
        self.rounds = 1;
        self.window = 1;
        self.warmup = 0;
        self.paced_rate = 200.0;
        self.paced_secs = 0.3;
        self.smoke = true;
        self
    }
}

/// An Envoy of the bench: its process, listener and admin ports.
struct Bench {
    cfg: Config,
    daemon: Daemon,
    port: u16,
    admin: u16,
}

fn start_envoy(
    o: &Options,
    name: &str,
    yaml: &str,
    core: usize,
    concurrency: u32,
    dir: &Path,
    admin: u16,
) -> Result<Daemon, String> {
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, yaml).map_err(|e| format!("write {}: {e}", cfg.display()))?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(core.to_string())
        .arg(&o.envoy)
        .arg("-c")
        .arg(&cfg)
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--base-id", &crate::run::envoy::next_base_id().to_string()])
        .args(["--log-level", "warning"]);
    let mut d = Daemon::spawn(name, &mut cmd, dir)?;
    let admin = format!("127.0.0.1:{admin}");
    d.wait_ready(Duration::from_secs(30), || {
        match crate::run::http::get(&admin, "/ready", Duration::from_secs(2)) {
            Ok((200, _)) => Ok(()),
            Ok((s, b)) => Err(format!("/ready {s} {b}")),
            Err(e) => Err(e),
        }
    })?;
    Ok(d)
}

fn get_ok(port: u16, path: &str) -> Result<(), String> {
    match crate::run::http::get(&format!("127.0.0.1:{port}"), path, Duration::from_secs(5)) {
        Ok((200, _)) => Ok(()),
        Ok((s, b)) => Err(format!("GET {path}: {s} {b}")),
        Err(e) => Err(format!("GET {path}: {e}")),
    }
}

/// One measured window of `b` on `route`: warm-up, then CPU time around a wrk run.
fn measure(o: &Options, b: &Bench, route: &str, round: usize) -> Result<Sample, String> {
    let url = format!("http://127.0.0.1:{}{route}", b.port);
    if o.warmup > 0 {
        load::wrk(&o.wrk, LOAD_CORE, &url, o.warmup, o.connections)?;
    }
    let c0 = load::cpu_seconds(b.daemon.pid())?;
    let w = load::wrk(&o.wrk, LOAD_CORE, &url, o.window, o.connections)?;
    let c1 = load::cpu_seconds(b.daemon.pid())?;
    let (paced_p50_ms, paced_p99_ms) = load::paced(
        &format!("127.0.0.1:{}", b.port),
        route,
        o.paced_rate,
        o.paced_secs,
    )?;
    Ok(Sample {
        config: b.cfg.name.clone(),
        route: route.to_string(),
        round,
        cpu_us_per_request: (c1 - c0) * 1e6 / w.requests as f64,
        rps: w.rps,
        p50_ms: w.p50_ms,
        p99_ms: w.p99_ms,
        errors: w.errors,
        paced_p50_ms,
        paced_p99_ms,
    })
}

/// Envoy RSS with 1 and with 4 workers for one configuration (each worker runs its own Wasm VM),
/// each a fresh Envoy after 1 s of load, so neither has the other's history.
fn memory(o: &Options, b: &Bench, dir: &Path, sink: u16) -> Result<Memory, String> {
    let mut rss = [0u64; 2];
    for (i, workers) in [1u32, 4].into_iter().enumerate() {
        let [port, admin] = ports::free_ports([None, None])?;
        let yaml = configs::envoy_yaml(&b.cfg, &o.meshtrace, port, admin, sink);
        let name = format!("{}-x{workers}", b.cfg.name);
        let mut d = start_envoy(o, &name, &yaml, ENVOY_CORE, workers, dir, admin)?;
        let url = format!("http://127.0.0.1:{port}{}", configs::DIRECT);
        load::wrk(&o.wrk, LOAD_CORE, &url, 1, 16)?;
        rss[i] = load::rss_kib(d.pid())?;
        d.stop();
    }
    Ok(Memory {
        config: b.cfg.name.clone(),
        rss_1_worker_kib: rss[0],
        rss_4_workers_kib: rss[1],
    })
}

/// The counters that show each tracer did its work (spans sent / dropped), per configuration.
fn tracer_stats(b: &Bench) -> Vec<(String, u64)> {
    let admin = format!("127.0.0.1:{}", b.admin);
    let Ok((200, text)) = crate::run::http::get(&admin, "/stats", Duration::from_secs(5)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| {
            k.contains("meshtrace_spans_") || k.starts_with("tracing.") || k.contains(".tracing.")
        })
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Runs the bench; the report (also written to `o.out`).
pub fn run(o: &Options, repo: &Path) -> Result<report::Report, String> {
    let dir = crate::run::rundir::run_dir(repo, "bench")?;
    println!("bench: run directory {}", dir.display());
    let [sink, sink_admin] = ports::free_ports([None, None])?;
    let mut sink_d = start_envoy(
        o,
        "sink",
        &configs::sink_yaml(sink, sink_admin),
        LOAD_CORE,
        1,
        &dir,
        sink_admin,
    )?;
    let mut benches = Vec::new();
    let chosen = |c: &Config| {
        o.only.is_empty() || c.name == "none" || o.only.iter().any(|s| c.name.contains(s.as_str()))
    };
    for cfg in configs::all(&o.empty, &o.floor, &o.alt)
        .into_iter()
        .filter(chosen)
    {
        let [port, admin] = ports::free_ports([None, None])?;
        let yaml = configs::envoy_yaml(&cfg, &o.meshtrace, port, admin, sink);
        let daemon = start_envoy(o, &cfg.name, &yaml, ENVOY_CORE, 1, &dir, admin)?;
        get_ok(port, configs::DIRECT)?;
        get_ok(port, configs::UPSTREAM)?;
        benches.push(Bench {
            cfg,
            daemon,
            port,
            admin,
        });
    }
    let mut samples = Vec::new();
    for round in 0..o.rounds {
        for route in [configs::DIRECT, configs::UPSTREAM] {
            // Interleaved, and each round starts one configuration later, so no configuration
            // always runs right after the same neighbour.
            for k in 0..benches.len() {
                let b = &benches[(k + round) % benches.len()];
                let s = measure(o, b, route, round)?;
                println!(
                    "  round {round} {route:<9} {:<22} {:>7.1} µs/req {:>8.0} rps p99 {:.2} ms",
                    b.cfg.name, s.cpu_us_per_request, s.rps, s.p99_ms
                );
                samples.push(s);
            }
        }
    }
    let mut mem = Vec::new();
    for b in benches.iter().filter(|b| {
        matches!(b.cfg.variant, Variant::None | Variant::Meshtrace { .. })
            || b.cfg.name == "empty-filter"
    }) {
        mem.push(memory(o, b, &dir, sink)?);
    }
    let stats = benches
        .iter()
        .map(|b| (b.cfg.name.clone(), tracer_stats(b)))
        .collect();
    for b in &mut benches {
        b.daemon.stop();
    }
    sink_d.stop();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let r = report::Report::new(
        o,
        samples,
        mem,
        stats,
        [
            ("meshtrace".into(), size(&o.meshtrace)),
            ("empty-filter".into(), size(&o.empty)),
            ("propagation-floor".into(), size(&o.floor)),
        ]
        .into_iter()
        .chain(
            o.alt
                .iter()
                .map(|(n, p)| (format!("meshtrace@{n}"), size(p))),
        )
        .collect(),
        envoy_version(&o.envoy),
    );
    let partial = o.smoke || !o.only.is_empty();
    let out = if partial { dir.clone() } else { o.out.clone() };
    let files = r.write(&out)?;
    for f in files {
        println!("bench: wrote {}", f.display());
    }
    Ok(r)
}

fn envoy_version(envoy: &Path) -> String {
    crate::process::output(
        Command::new(envoy).arg("--version"),
        Duration::from_secs(10),
    )
    .map(|o| {
        // `<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        text.split("version:")
            .nth(1)
            .and_then(|v| v.trim().split('/').nth(1))
            .unwrap_or("?")
            .to_string()
    })
    .unwrap_or_else(|e| format!("? ({e})"))
}

/// What makes a run's figures meaningless (empty: none). Checked after every run, smoke or
/// full; never about speed.
pub fn smoke_problems(r: &report::Report) -> Vec<String> {
    let mut p = Vec::new();
    let names: Vec<String> = configs::all(Path::new(""), Path::new(""), &[])
        .into_iter()
        .map(|c| c.name)
        .collect();
    for route in [configs::DIRECT, configs::UPSTREAM] {
        for n in &names {
            match r.rows.iter().find(|x| &x.config == n && x.route == route) {
                None => p.push(format!("{n} {route}: no sample")),
                Some(x) if x.errors > 0 => p.push(format!("{n} {route}: {} errors", x.errors)),
                Some(x) if !(x.cpu_us.median > 0.0 && x.rps.median > 0.0) => {
                    p.push(format!("{n} {route}: no CPU time or rps measured"))
                }
                Some(_) => {}
            }
        }
    }
    // Each tracer at 100% must really have sent spans to the sink, or its cost is not a tracer's.
    for (cfg, key) in [
        ("meshtrace-100%", "meshtrace_spans_exported"),
        ("zipkin-100%", "tracing.zipkin.spans_sent"),
        ("otel-100%", "tracing.opentelemetry.spans_sent"),
    ] {
        let sent: u64 = r
            .tracer_stats
            .get(cfg)
            .map(|s| {
                s.iter()
                    .filter(|(k, _)| k.ends_with(key))
                    .map(|(_, v)| v)
                    .sum()
            })
            .unwrap_or(0);
        if sent == 0 {
            p.push(format!("{cfg}: no span sent ({key} is 0)"));
        }
    }
    if r.memory.len() < 3 {
        p.push(format!(
            "memory measured for {} configurations, want 3+",
            r.memory.len()
        ));
    }
    if r.targets.iter().any(|t| !t.value.is_finite()) {
        p.push("a target ratio could not be computed".into());
    }
    p
}
