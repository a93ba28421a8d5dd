//! The bench's figures: per configuration and route the min / median / spread over rounds of
//! Envoy's CPU time per request, the extra over no filter (paired within each round), rps and
//! latencies; the target ratios; memory per Wasm VM; written as Markdown, JSON and an SVG chart.

use super::configs::{DIRECT, UPSTREAM};
use super::Options;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub config: String,
    pub route: String,
    pub round: usize,
    pub cpu_us_per_request: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub paced_p50_ms: f64,
    pub paced_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub config: String,
    pub rss_1_worker_kib: u64,
    pub rss_4_workers_kib: u64,
}

impl Memory {
    /// What each extra worker (one Wasm VM each, with a filter) adds.
    pub fn per_worker_kib(&self) -> f64 {
        (self.rss_4_workers_kib as f64 - self.rss_1_worker_kib as f64) / 3.0
    }
}

/// min, median, spread ((max − min) / median) of a list.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Stat {
    pub min: f64,
    pub median: f64,
    pub spread: f64,
}

pub fn stat(v: &[f64]) -> Stat {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Stat::default();
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let spread = if median.abs() > f64::EPSILON {
        (s[n - 1] - s[0]) / median.abs()
    } else {
        0.0
    };
    Stat {
        min: s[0],
        median,
        spread,
    }
}

/// One configuration on one route, over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub config: String,
    pub route: String,
    pub cpu_us: Stat,
    /// CPU per request minus no filter's in the same round and route.
    pub extra_us: Stat,
    pub rps: Stat,
    pub p50_ms: Stat,
    pub p99_ms: Stat,
    pub paced_p50_ms: Stat,
    pub paced_p99_ms: Stat,
    pub errors: u64,
}

/// A target of issue "performance": a measured ratio and its bound.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub bound: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub envoy: String,
    pub smoke: bool,
    pub rounds: usize,
    pub window_s: u32,
    pub connections: u32,
    pub paced_rate: f64,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub memory: Vec<Memory>,
    pub module_bytes: BTreeMap<String, u64>,
    pub tracer_stats: BTreeMap<String, Vec<(String, u64)>>,
    pub samples: Vec<Sample>,
}

fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut order: Vec<(String, String)> = Vec::new();
    for s in samples {
        let k = (s.route.clone(), s.config.clone());
        if !order.contains(&k) {
            order.push(k);
        }
    }
    order.sort_by_key(|(route, _)| route != DIRECT);
    let base = |route: &str, round: usize| {
        samples
            .iter()
            .find(|s| s.config == "none" && s.route == route && s.round == round)
            .map(|s| s.cpu_us_per_request)
    };
    order
        .into_iter()
        .map(|(route, config)| {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.config == config && s.route == route)
                .collect();
            let f = |g: fn(&Sample) -> f64| stat(&mine.iter().map(|s| g(s)).collect::<Vec<_>>());
            let extra: Vec<f64> = mine
                .iter()
                .filter_map(|s| Some(s.cpu_us_per_request - base(&route, s.round)?))
                .collect();
            Row {
                cpu_us: f(|s| s.cpu_us_per_request),
                extra_us: stat(&extra),
                rps: f(|s| s.rps),
                p50_ms: f(|s| s.p50_ms),
                p99_ms: f(|s| s.p99_ms),
                paced_p50_ms: f(|s| s.paced_p50_ms),
                paced_p99_ms: f(|s| s.paced_p99_ms),
                errors: mine.iter().map(|s| s.errors).sum(),
                config,
                route,
            }
        })
        .collect()
}

fn targets(rows: &[Row], module_bytes: u64) -> Vec<Target> {
    let get = |c: &str| rows.iter().find(|r| r.config == c && r.route == DIRECT);
    let ratio = |a: &str, b: &str, f: fn(&Row) -> f64| match (get(a), get(b)) {
        (Some(x), Some(y)) if f(y).abs() > f64::EPSILON => f(x) / f(y),
        _ => f64::NAN,
    };
    let extra = |r: &Row| r.extra_us.median;
    let t = |what: &str, value: f64, bound: &str, met: bool| Target {
        what: what.into(),
        value,
        bound: bound.into(),
        met,
    };
    let r1 = ratio("meshtrace-1%", "zipkin-1%", extra);
    let r2 = ratio("meshtrace-100%", "zipkin-100%", extra);
    let r2b = ratio("meshtrace-100%", "zipkin-100%", |r| r.rps.median);
    let r3 = ratio("meshtrace-100%", "propagation-floor", extra);
    let p1 = ratio("meshtrace-1%", "empty-filter", |r| r.paced_p99_ms.median);
    let kib = module_bytes as f64 / 1024.0;
    vec![
        t(
            "extra CPU at 1%: meshtrace / Envoy Zipkin",
            r1,
            "≤ 1.25",
            r1 <= 1.25,
        ),
        t(
            "extra CPU at 100%: meshtrace / Envoy Zipkin",
            r2,
            "≤ 0.2",
            r2 <= 0.2,
        ),
        t(
            "rps at 100%: meshtrace / Envoy Zipkin",
            r2b,
            "≥ 3.5",
            r2b >= 3.5,
        ),
        t(
            "extra CPU at 100%: meshtrace / propagation floor",
            r3,
            "≤ 1.6",
            r3 <= 1.6,
        ),
        t("module size (KiB)", kib, "≤ 200", kib <= 200.0),
        t(
            "paced p99 at 1%: meshtrace / empty filter",
            p1,
            "≤ 1.10",
            p1 <= 1.10,
        ),
    ]
}

impl Report {
    pub fn new(
        o: &Options,
        samples: Vec<Sample>,
        memory: Vec<Memory>,
        tracer_stats: BTreeMap<String, Vec<(String, u64)>>,
        sizes: Vec<(String, u64)>,
        envoy: String,
    ) -> Report {
        let rows = rows(&samples);
        let module_bytes: BTreeMap<String, u64> = sizes.into_iter().collect();
        let targets = targets(&rows, module_bytes.get("meshtrace").copied().unwrap_or(0));
        Report {
            date: today(),
            envoy,
            smoke: o.smoke,
            rounds: o.rounds,
            window_s: o.window,
            connections: o.connections,
            paced_rate: o.paced_rate,
            rows,
            targets,
            memory,
            module_bytes,
            tracer_stats,
            samples,
        }
    }

    /// Writes `<date>.md`, `<date>.json` and `<date>.svg` into `dir` (`<date>-2.*`, `-3.*` … when a
    /// run of that day is there already: results are history); their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let stem = (1..)
            .map(|n| match n {
                1 => self.date.clone(),
                n => format!("{}-{n}", self.date),
            })
            .find(|stem| !dir.join(format!("{stem}.md")).exists())
            .unwrap_or_else(|| self.date.clone());
        let files = [
            (format!("{stem}.md"), self.markdown()),
            (format!("{stem}.json"), json),
            (format!("{stem}.svg"), self.svg()),
        ];
        let mut out = Vec::new();
        for (name, body) in files {
            let p = dir.join(name);
            std::fs::write(&p, body).map_err(|e| format!("write {}: {e}", p.display()))?;
            out.push(p);
        }
        Ok(out)
    }

    pub fn markdown(&self) -> String {
        let mut m = format!(
            "# meshtrace bench {}\n\nEnvoy {}, `--concurrency 1` pinned to core 0, wrk (1 thread, {} connections) and the sink on core 1; {} interleaved round(s) of {} s per configuration and route; paced latency at {} requests/s.{}\n\n",
            self.date,
            self.envoy,
            self.connections,
            self.rounds,
            self.window_s,
            self.paced_rate,
            if self.smoke { " **Smoke run: these figures mean nothing.**" } else { "" }
        );
        m.push_str("## Targets (direct-response route, medians)\n\n| target | measured | bound | met |\n|---|---|---|---|\n");
        for t in &self.targets {
            m.push_str(&format!(
                "| {} | {:.2} | {} | {} |\n",
                t.what,
                t.value,
                t.bound,
                if t.met { "yes" } else { "no" }
            ));
        }
        let alts: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.route == DIRECT && r.config.contains('@'))
            .collect();
        if !alts.is_empty() {
            m.push_str("\n## Other builds, same run (direct route, extra CPU µs/req, medians)\n\n| build | extra | default build's | ratio |\n|---|---|---|---|\n");
        }
        for a in alts {
            let base = a.config.split('@').next().unwrap_or_default();
            if let Some(b) = self
                .rows
                .iter()
                .find(|r| r.route == DIRECT && r.config == base)
            {
                m.push_str(&format!(
                    "| {} | {:.1} | {:.1} | {:.2} |\n",
                    a.config,
                    a.extra_us.median,
                    b.extra_us.median,
                    a.extra_us.median / b.extra_us.median
                ));
            }
        }
        for route in [DIRECT, UPSTREAM] {
            m.push_str(&format!("\n## Route `{route}`\n\nCPU µs per request: min / median / spread; extra = minus `none` in the same round.\n\n| configuration | CPU µs/req | extra µs/req | rps (median) | p50 / p99 ms at saturation | p50 / p99 ms at {} rps | errors |\n|---|---|---|---|---|---|---|\n", self.paced_rate));
            for r in self.rows.iter().filter(|r| r.route == route) {
                m.push_str(&format!(
                    "| {} | {:.1} / {:.1} / {:.0}% | {:.1} / {:.1} | {:.0} | {:.2} / {:.2} | {:.3} / {:.3} | {} |\n",
                    r.config,
                    r.cpu_us.min,
                    r.cpu_us.median,
                    r.cpu_us.spread * 100.0,
                    r.extra_us.min,
                    r.extra_us.median,
                    r.rps.median,
                    r.p50_ms.median,
                    r.p99_ms.median,
                    r.paced_p50_ms.median,
                    r.paced_p99_ms.median,
                    r.errors
                ));
            }
        }
        m.push_str("\n## Memory (Envoy RSS, KiB)\n\nEach worker runs its own Wasm VM: a worker's cost is (RSS with 4 workers − with 1) / 3; the VM's, that minus a worker's without a filter.\n\n| configuration | 1 worker | 4 workers | per extra worker | per Wasm VM |\n|---|---|---|---|---|\n");
        let none = self
            .memory
            .iter()
            .find(|x| x.config == "none")
            .map(Memory::per_worker_kib)
            .unwrap_or(0.0);
        for x in &self.memory {
            m.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} |\n",
                x.config,
                x.rss_1_worker_kib,
                x.rss_4_workers_kib,
                x.per_worker_kib(),
                x.per_worker_kib() - none
            ));
        }
        m.push_str("\n## Module sizes\n\n");
        for (k, v) in &self.module_bytes {
            m.push_str(&format!(
                "- {k}: {v} bytes ({:.0} KiB)\n",
                *v as f64 / 1024.0
            ));
        }
        m.push_str("\n## Tracer counters at the end (spans really sent)\n\n");
        for (cfg, st) in &self.tracer_stats {
            let shown: Vec<String> = st
                .iter()
                .filter(|(k, v)| *v > 0 && (k.contains("spans") || k.contains("reports")))
                .map(|(k, v)| format!("`{k}` {v}"))
                .collect();
            if !shown.is_empty() {
                m.push_str(&format!("- {cfg}: {}\n", shown.join(", ")));
            }
        }
        m
    }

    /// Extra CPU µs per request on the direct route, one bar per configuration (median), a
    /// whisker from min to max.
    pub fn svg(&self) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.route == DIRECT && r.config != "none")
            .collect();
        let max = self
            .samples
            .iter()
            .filter(|s| s.route == DIRECT)
            .map(|s| s.cpu_us_per_request)
            .fold(1.0_f64, f64::max);
        let (left, width, bar) = (190.0, 520.0, 26.0);
        let h = 60.0 + rows.len() as f64 * bar;
        let x = |v: f64| left + (v.max(0.0) / max) * width;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">Extra Envoy CPU per request over no filter (µs, median; line: min–max), direct response, {}</text>\n",
            self.date
        );
        for (i, r) in rows.iter().enumerate() {
            let y = 40.0 + i as f64 * bar;
            let colour = if r.config.starts_with("meshtrace") {
                "#2a7ab0"
            } else if r.config.starts_with("zipkin") || r.config.starts_with("otel") {
                "#c0504d"
            } else {
                "#999999"
            };
            let mine: Vec<f64> = self
                .samples
                .iter()
                .filter(|x| x.config == r.config && x.route == DIRECT)
                .map(|x| x.cpu_us_per_request)
                .collect();
            let base = r.cpu_us.median - r.extra_us.median;
            let hi = mine.iter().copied().fold(f64::MIN, f64::max) - base;
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>\n<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<text x=\"{:.1}\" y=\"{}\">{:.1}</text>\n",
                left - 8.0,
                y + 15.0,
                r.config,
                y + 4.0,
                (x(r.extra_us.median) - left).max(0.5),
                bar - 8.0,
                x(r.extra_us.min),
                x(hi),
                y + 13.0,
                y + 13.0,
                x(hi.max(r.extra_us.median)) + 6.0,
                y + 17.0,
                r.extra_us.median
            ));
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::run::upstream::utc_string(secs)
        .chars()
        .take(10)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(config: &str, round: usize, cpu: f64) -> Sample {
        Sample {
            config: config.into(),
            route: DIRECT.into(),
            round,
            cpu_us_per_request: cpu,
            rps: 1000.0 / cpu,
            p50_ms: 1.0,
            p99_ms: 2.0,
            errors: 0,
            paced_p50_ms: 0.1,
            paced_p99_ms: 0.2,
        }
    }

    #[test]
    fn stats_and_paired_extras() {
        let s = stat(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median), (1.0, 2.5));
        assert!((s.spread - 3.6).abs() < 1e-9);
        // Round 1 is slow for everyone: pairing within the round keeps the extra steady.
        let samples = vec![
            sample("none", 0, 10.0),
            sample("meshtrace-1%", 0, 20.0),
            sample("none", 1, 20.0),
            sample("meshtrace-1%", 1, 30.0),
        ];
        let r = rows(&samples);
        let m = r.iter().find(|r| r.config == "meshtrace-1%").unwrap();
        assert_eq!((m.extra_us.min, m.extra_us.median), (10.0, 10.0));
        let t = targets(&r, 300 * 1024);
        let size = t
            .iter()
            .find(|t| t.what.starts_with("module size"))
            .unwrap();
        assert!(!size.met && (size.value - 300.0).abs() < 1e-9);
        assert!(t[0].value.is_nan() && !t[0].met);
    }
}
