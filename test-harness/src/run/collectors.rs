//! Real collectors (Jaeger v2, Zipkin server) started per scenario: process lifecycle, ports,
//! readiness, and reading back what they stored through their query APIs.
//!
//! Each collector runs in its own process group, registered with the harness's interrupt handler
//! (see `envoy.rs`), and binds only 127.0.0.1.

use crate::model::expect::IngestStats;
use crate::model::normalize::jaeger_trace_to_zipkin;
use crate::model::scenario::RealCollectorKind;
use crate::run::envoy::{register_group, signal_group, unregister_group};
use crate::run::http;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the collector binaries are.
#[derive(Debug, Clone)]
pub struct CollectorBins {
    pub jaeger: PathBuf,
    pub zipkin_jar: PathBuf,
    pub java: PathBuf,
}

impl CollectorBins {
    /// `$MESHTRACE_JAEGER` (default `<repo>/.tools/bin/jaeger`), `$MESHTRACE_ZIPKIN_JAR` (default
    /// `<repo>/.tools/zipkin/zipkin-server-3.6.1-exec.jar`), `$MESHTRACE_JAVA` (default `java`).
    pub fn discover(repo: &Path) -> CollectorBins {
        let env_path = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        CollectorBins {
            jaeger: env_path("MESHTRACE_JAEGER")
                .unwrap_or_else(|| repo.join(".tools").join("bin").join("jaeger")),
            zipkin_jar: env_path("MESHTRACE_ZIPKIN_JAR").unwrap_or_else(|| {
                repo.join(".tools")
                    .join("zipkin")
                    .join("zipkin-server-3.6.1-exec.jar")
            }),
            java: env_path("MESHTRACE_JAVA").unwrap_or_else(|| PathBuf::from("java")),
        }
    }

    /// Fails with an actionable message when the collector's binary is missing.
    pub fn require(&self, kind: RealCollectorKind) -> Result<(), String> {
        let (path, var) = match kind {
            RealCollectorKind::Jaeger => (&self.jaeger, "MESHTRACE_JAEGER"),
            RealCollectorKind::Zipkin => (&self.zipkin_jar, "MESHTRACE_ZIPKIN_JAR"),
        };
        if path.is_file() {
            Ok(())
        } else {
            Err(format!(
                "{} {} does not exist: `make tools` installs it (or set {var})",
                kind.name(),
                path.display()
            ))
        }
    }
}

/// Free loopback ports, one per entry: the preferred port when it is free, else one below the
/// kernel's ephemeral range. A collector binds its ports seconds after they are chosen (a JVM
/// starts slowly); a port from the ephemeral range could meanwhile be handed to anything binding
/// port 0 (an app, an Envoy), which would then answer in the collector's place. Ports handed out
/// are remembered for the life of the process, so parallel scenarios never share one, and every
/// listener stays open until all are chosen.
fn free_ports<const N: usize>(preferred: [Option<u16>; N]) -> Result<[u16; N], String> {
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED.lock().unwrap_or_else(|p| p.into_inner());
    let (lo, hi) = (10_000u16, ephemeral_low().clamp(10_001, 32_768));
    let span = u32::from(hi - lo);
    let mut next = std::process::id().wrapping_mul(7919) % span;
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for (slot, want) in ports.iter_mut().zip(preferred) {
        let mut listener = want
            .filter(|p| !handed.contains(p))
            .and_then(|p| TcpListener::bind(("127.0.0.1", p)).ok());
        let mut tries = 0;
        while listener.is_none() {
            tries += 1;
            if tries > span {
                return Err(format!("no free loopback port in {lo}..{hi}"));
            }
            next = (next + 1) % span;
            let p = lo + next as u16;
            if !handed.contains(&p) {
                listener = TcpListener::bind(("127.0.0.1", p)).ok();
            }
        }
        if let Some(l) = listener {
            *slot = l
                .local_addr()
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            handed.push(*slot);
            held.push(l);
        }
    }
    Ok(ports)
}

/// The first port the kernel hands out for port 0 (`ip_local_port_range`, 32768 by default).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Whether a readiness answer came from the collector: Zipkin's `/health` names `zipkin`, Jaeger's
/// `/api/services` has `data`.
fn readiness_answer_is_collector(kind: RealCollectorKind, body: &str) -> bool {
    let key = match kind {
        RealCollectorKind::Zipkin => "zipkin",
        RealCollectorKind::Jaeger => "data",
    };
    serde_json::from_str::<Value>(body).is_ok_and(|v| v.get(key).is_some())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub struct RealCollector {
    pub kind: RealCollectorKind,
    /// HTTP query API (Jaeger query / Zipkin's QUERY_PORT, which also serves the UI).
    pub query: SocketAddr,
    /// Where Zipkin v2 JSON spans are POSTed (`/api/v2/spans`).
    pub zipkin_in: SocketAddr,
    /// Jaeger's OTLP/HTTP receiver (`/v1/traces`).
    pub otlp_in: Option<SocketAddr>,
    /// Where the collector's own Prometheus metrics are (path in `metrics_path`).
    pub metrics: SocketAddr,
    metrics_path: &'static str,
    pub log: PathBuf,
    child: Child,
    pgid: i32,
    exited: Option<ExitStatus>,
}

/// The Jaeger v2 configuration: in-memory storage, OTLP/HTTP and Zipkin receivers, query API and
/// self-metrics, everything on 127.0.0.1.
pub fn jaeger_config(query: u16, grpc: u16, otlp: u16, zipkin: u16, metrics: u16) -> String {
    format!(
        "# generated by test-harness
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {metrics}
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
  zipkin:
    endpoint: 127.0.0.1:{zipkin}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"
    )
}

impl RealCollector {
    /// Starts the collector (without waiting for it). `well_known` prefers the usual ports
    /// (Jaeger query 16686, Zipkin 9411) when they are free.
    pub fn spawn(
        kind: RealCollectorKind,
        bins: &CollectorBins,
        dir: &Path,
        well_known: bool,
    ) -> Result<RealCollector, String> {
        bins.require(kind)?;
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let log = dir.join(format!("{}.log", kind.name()));
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let prefer = |p: u16| well_known.then_some(p);
        let (mut cmd, query, zipkin_in, otlp_in, metrics, metrics_path) = match kind {
            RealCollectorKind::Jaeger => {
                let [query, grpc, otlp, zipkin, metrics] = free_ports([
                    prefer(16686),
                    prefer(16685),
                    prefer(4318),
                    prefer(9411),
                    None,
                ])?;
                let cfg = dir.join("jaeger.yaml");
                std::fs::write(&cfg, jaeger_config(query, grpc, otlp, zipkin, metrics))
                    .map_err(|e| format!("write {}: {e}", cfg.display()))?;
                let mut cmd = Command::new(&bins.jaeger);
                cmd.arg("--config").arg(&cfg);
                (
                    cmd,
                    query,
                    zipkin,
                    Some(loopback(otlp)),
                    metrics,
                    "/metrics",
                )
            }
            RealCollectorKind::Zipkin => {
                let [port] = free_ports([prefer(9411)])?;
                let mut cmd = Command::new(&bins.java);
                cmd.args([
                    "-Xms64m",
                    "-Xmx512m",
                    "-XX:TieredStopAtLevel=1",
                    "-XX:+UseSerialGC",
                    "-Xss512k",
                    "-jar",
                ])
                .arg(&bins.zipkin_jar)
                .arg(format!("--armeria.ports[0].port={port}"))
                .arg("--armeria.ports[0].ip=127.0.0.1")
                .arg("--armeria.ports[0].protocols=http")
                .env("STORAGE_TYPE", "mem")
                .env("QUERY_PORT", port.to_string())
                .env("SELF_TRACING_ENABLED", "false")
                .env("COLLECTOR_SCRIBE_ENABLED", "false");
                (cmd, port, port, None, port, "/prometheus")
            }
        };
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let what = match kind {
            RealCollectorKind::Jaeger => bins.jaeger.display().to_string(),
            RealCollectorKind::Zipkin => bins.java.display().to_string(),
        };
        let child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
        let pgid = child.id() as i32;
        register_group(pgid);
        Ok(RealCollector {
            kind,
            query: loopback(query),
            zipkin_in: loopback(zipkin_in),
            otlp_in,
            metrics: loopback(metrics),
            metrics_path,
            log,
            child,
            pgid,
            exited: None,
        })
    }

    /// Where an Envoy exports to: the OTLP/HTTP receiver for `otlp_json`, else the Zipkin one.
    pub fn ingest(&self, otlp: bool) -> SocketAddr {
        match (otlp, self.otlp_in) {
            (true, Some(a)) => a,
            _ => self.zipkin_in,
        }
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// The last lines of the collector's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| crate::model::spans::truncate(l, 300))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the query API answers (Jaeger: `/api/services` 200; Zipkin: `/health` 200).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        let path = match self.kind {
            RealCollectorKind::Jaeger => "/api/services",
            RealCollectorKind::Zipkin => "/health",
        };
        loop {
            if let Some(st) = self.poll_exit() {
                return Err(format!(
                    "{} exited during startup ({st}); log {}:\n{}",
                    self.kind.name(),
                    self.log.display(),
                    self.log_tail(8)
                ));
            }
            // The answer must be the collector's own, not any server's that holds the port.
            if let Ok((200, body)) =
                http::get(&self.query.to_string(), path, Duration::from_secs(2))
            {
                if readiness_answer_is_collector(self.kind, &body) {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() >= timeout {
                return Err(format!(
                    "{} not ready after {} s ({path} on {}); log {}:\n{}",
                    self.kind.name(),
                    timeout.as_secs(),
                    self.query,
                    self.log.display(),
                    self.log_tail(8)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get_json(&self, path: &str) -> Result<Value, String> {
        match http::get(&self.query.to_string(), path, Duration::from_secs(10))? {
            (200, body) => serde_json::from_str(&body)
                .map_err(|e| format!("{} {path}: not JSON: {e}", self.kind.name())),
            (s, body) => Err(format!(
                "{} {path}: HTTP {s}: {}",
                self.kind.name(),
                crate::model::spans::truncate(body.trim(), 200)
            )),
        }
    }

    /// Service names the collector knows.
    pub fn services(&self) -> Result<Vec<String>, String> {
        let v = match self.kind {
            RealCollectorKind::Jaeger => self.get_json("/api/services")?.get("data").cloned(),
            RealCollectorKind::Zipkin => Some(self.get_json("/api/v2/services")?),
        };
        Ok(v.as_ref()
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every stored span, in the Zipkin v2 shape.
    pub fn read_spans(&self) -> Result<Vec<Value>, String> {
        match self.kind {
            RealCollectorKind::Zipkin => {
                let v = self.get_json("/api/v2/traces?limit=1000&lookback=3600000")?;
                let traces = v.as_array().ok_or("zipkin /api/v2/traces: not a list")?;
                Ok(traces
                    .iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .cloned()
                    .collect())
            }
            RealCollectorKind::Jaeger => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for svc in self.services()? {
                    let v = self.get_json(&format!(
                        "/api/traces?service={}&lookback=1h&limit=1000",
                        url_encode(&svc)
                    ))?;
                    for t in v
                        .get("data")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let id = t
                            .get("traceID")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        if seen.insert(id) {
                            out.extend(jaeger_trace_to_zipkin(t));
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// The collector's own ingest counters: spans accepted, and every dropped/refused counter.
    pub fn ingest_stats(&self) -> Result<IngestStats, String> {
        let (s, text) = http::get(
            &self.metrics.to_string(),
            self.metrics_path,
            Duration::from_secs(5),
        )?;
        if s != 200 {
            return Err(format!(
                "{} {}{}: HTTP {s}",
                self.kind.name(),
                self.metrics,
                self.metrics_path
            ));
        }
        let (accepted, dropped): (&[&str], &[&str]) = match self.kind {
            RealCollectorKind::Zipkin => (
                &["zipkin_collector_spans_total"],
                &[
                    "zipkin_collector_spans_dropped_total",
                    "zipkin_collector_messages_dropped_total",
                ],
            ),
            RealCollectorKind::Jaeger => (
                &["otelcol_receiver_accepted_spans"],
                &[
                    "otelcol_receiver_refused_spans",
                    "otelcol_receiver_failed_spans",
                    "otelcol_exporter_send_failed_spans",
                ],
            ),
        };
        let sum = |name: &str| prom_sum(&text, name);
        Ok(IngestStats {
            accepted: accepted.iter().filter_map(|n| sum(n)).sum(),
            dropped: dropped
                .iter()
                .filter_map(|n| sum(n).map(|v| (n.to_string(), v)))
                .collect(),
        })
    }

    /// Links to a trace in the collector's API and UI.
    pub fn links(&self, trace_id: &str) -> Vec<String> {
        trace_links(self.kind, self.query, trace_id)
    }

    /// SIGTERM to the process group, then SIGKILL after 3 s.
    pub fn stop(&mut self) {
        if self.poll_exit().is_some() && !signal_group(self.pgid, 0) {
            return;
        }
        signal_group(self.pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.poll_exit().is_some() && !signal_group(self.pgid, 0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.pgid, libc::SIGKILL);
        if self.exited.is_none() {
            if let Ok(st) = self.child.wait() {
                self.exited = Some(st);
            }
        }
    }
}

impl Drop for RealCollector {
    fn drop(&mut self) {
        self.stop();
        unregister_group(self.pgid);
    }
}

/// Links to a trace in a collector's API and UI (`query`: its query HTTP address).
pub fn trace_links(kind: RealCollectorKind, q: SocketAddr, trace_id: &str) -> Vec<String> {
    match kind {
        RealCollectorKind::Zipkin => vec![
            format!("http://{q}/zipkin/traces/{trace_id}   (Zipkin UI)"),
            format!("http://{q}/api/v2/trace/{trace_id}   (JSON)"),
        ],
        RealCollectorKind::Jaeger => vec![
            format!("http://{q}/api/traces/{trace_id}   (JSON, v1 API)"),
            format!("http://{q}/api/v3/traces/{trace_id}   (OTLP JSON, v3 API)"),
            format!(
                "http://{q}/trace/{trace_id}   (UI: a placeholder page, this Jaeger was built without its UI)"
            ),
        ],
    }
}

/// The sum of every sample of the Prometheus metric `name` (with or without a `_total` suffix
/// in the exposition), or None when there is no such sample.
pub fn prom_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        let rest = rest.strip_prefix("_total").unwrap_or(rest);
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let v = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(v) = v {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sums_and_names() {
        let text = "# HELP x\n\
            zipkin_collector_spans_dropped_total{transport=\"http\",} 2.0\n\
            zipkin_collector_spans_dropped_total{transport=\"grpc\",} 1.0\n\
            zipkin_collector_spans_total{transport=\"http\",} 7.0\n\
            otelcol_receiver_refused_spans_total{receiver=\"zipkin\"} 0\n";
        assert_eq!(
            prom_sum(text, "zipkin_collector_spans_dropped_total"),
            Some(3.0)
        );
        assert_eq!(prom_sum(text, "zipkin_collector_spans_total"), Some(7.0));
        assert_eq!(prom_sum(text, "otelcol_receiver_refused_spans"), Some(0.0));
        assert_eq!(prom_sum(text, "zipkin_collector_spans"), Some(7.0));
        assert_eq!(prom_sum(text, "nope"), None);
    }

    #[test]
    fn readiness_answer_rows() {
        let zipkin_health = r#"{"status":"UP","zipkin":{"status":"UP"}}"#;
        let rows: &[(&str, RealCollectorKind, &str, bool)] = &[
            (
                "zipkin health",
                RealCollectorKind::Zipkin,
                zipkin_health,
                true,
            ),
            (
                "jaeger services",
                RealCollectorKind::Jaeger,
                r#"{"data":[],"total":0}"#,
                true,
            ),
            (
                "an app holding the port",
                RealCollectorKind::Zipkin,
                "ok from callee\n",
                false,
            ),
            (
                "other JSON",
                RealCollectorKind::Zipkin,
                r#"{"status":"UP"}"#,
                false,
            ),
            (
                "zipkin's answer to a jaeger check",
                RealCollectorKind::Jaeger,
                zipkin_health,
                false,
            ),
        ];
        for (name, kind, body, want) in rows {
            assert_eq!(
                readiness_answer_is_collector(*kind, body),
                *want,
                "row {name}"
            );
        }
    }

    #[test]
    fn ports_are_unique_and_outside_the_ephemeral_range() {
        let a = free_ports([None, None, None]).unwrap();
        let b = free_ports([None, Some(a[0])]).unwrap();
        let mut all: Vec<u16> = a.iter().chain(b.iter()).copied().collect();
        assert!(all.iter().all(|p| *p < ephemeral_low()), "{all:?}");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5, "no port handed out twice");
    }

    #[test]
    fn jaeger_config_is_loopback_only() {
        let c = jaeger_config(1, 2, 3, 4, 5);
        let v: serde_yaml::Value = serde_yaml::from_str(&c).unwrap();
        assert_eq!(
            v["extensions"]["jaeger_query"]["http"]["endpoint"].as_str(),
            Some("127.0.0.1:1")
        );
        assert!(!c.contains("0.0.0.0"));
        assert_eq!(url_encode("a b.c/d"), "a%20b.c%2Fd");
    }
}
