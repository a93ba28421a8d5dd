//! What a scenario starts and sends: Envoys, upstreams, the fake collector, requests.

use crate::model::matcher::scalar_string;
use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigKind {
    Gateway,
    SidecarInbound,
    SidecarOutbound,
}

impl ConfigKind {
    /// File name under `envoy/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigKind::Gateway => "gateway.yaml",
            ConfigKind::SidecarInbound => "sidecar-inbound.yaml",
            ConfigKind::SidecarOutbound => "sidecar-outbound.yaml",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoySpec {
    pub name: String,
    pub config: ConfigKind,
    /// Deep-merged into the JSON plugin configuration of the shipped config.
    #[serde(default)]
    pub plugin_config: Option<serde_json::Value>,
    /// Replaces the plugin configuration string verbatim (wins over `plugin_config`).
    #[serde(default)]
    pub plugin_config_raw: Option<String>,
    /// Upstream name for the `app` cluster (default: the only upstream, if there is exactly one).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Point the `app` cluster at a closed port.
    #[serde(default)]
    pub upstream_unreachable: bool,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub expect_start_failure: bool,
    /// Value for `--component-log-level` (default `wasm:debug`).
    #[serde(default)]
    pub log_level: Option<String>,
    /// Load this module (a path from the repository root) instead of `dist/meshtrace.wasm`, e.g.
    /// the trapping fixture of the failure-policy scenario.
    #[serde(default)]
    pub module: Option<String>,
    /// Replaces the wasm filter's `failure_policy` (FAIL_OPEN, FAIL_RELOAD, FAIL_CLOSED, UNSPECIFIED).
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// Extra Envoy command-line arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The bootstrap `node:` (id, cluster, metadata). With an `id`, `--service-node` is not passed.
    #[serde(default)]
    pub node: Option<NodeSpec>,
    /// Export through another Envoy: this Envoy's `zipkin` cluster points at the listener of the
    /// named Envoy, whose `app` cluster points at this Envoy's collector endpoint.
    #[serde(default)]
    pub collector_via: Option<String>,
    /// Point the `app` cluster at the listener of the named Envoy (a proxy in front of another
    /// proxy, like an ingress gateway in front of a sidecar). That Envoy starts first.
    #[serde(default)]
    pub upstream_envoy: Option<String>,
    /// Serve the listeners from a file (`dynamic_resources.lds_config.path_config_source` with a
    /// watched directory) instead of `static_resources`, so a request's `reload` can replace them.
    #[serde(default)]
    pub lds: bool,
}

/// The Envoy bootstrap `node:` block (what Istio's agent fills in).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    /// Node metadata, e.g. `{WORKLOAD_NAME: reviews-v1, NAMESPACE: bookinfo}`.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    #[serde(default)]
    pub next: Option<NextHop>,
    /// Response body for ordinary routes (default `ok from <name>\n`).
    #[serde(default)]
    pub body: Option<String>,
    /// Canned responses by path prefix (the first match wins; checked before the built-in routes).
    #[serde(default)]
    pub responses: Vec<CannedResponse>,
    /// An instrumented app: for each sampled request it reports its own SERVER span to the
    /// scenario's real collector.
    #[serde(default)]
    pub report_span: Option<ReportSpan>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpan {
    /// `localEndpoint.serviceName` of the reported spans.
    pub service: String,
    /// An OpenTelemetry-style app: reads only `traceparent` and forwards only `traceparent` (its own
    /// span as the parent) and `tracestate` to its next hop, never B3.
    #[serde(default)]
    pub w3c_only: bool,
    /// A Zipkin-style app (jaeger-client's `ZipkinSharedRPCSpan(true)`): its SERVER span reuses
    /// the incoming span id and keeps the incoming parent (`x-b3-parentspanid`), marked `shared`.
    #[serde(default)]
    pub shared_rpc: bool,
}

/// A fixed response for requests whose path starts with `when_path_prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedResponse {
    pub when_path_prefix: String,
    #[serde(default = "default_status")]
    pub status: u16,
    /// Response headers (a list value sends the header once per element).
    #[serde(default)]
    pub headers: HeaderList,
    /// Response body (default empty).
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHop {
    /// Envoy whose listener the app calls.
    pub envoy: String,
    /// Path to call (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Only call the next hop when the incoming path starts with this (default: always).
    #[serde(default)]
    pub when_path_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CollectorMode {
    #[default]
    Up,
    Down,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSpec {
    #[serde(default)]
    pub mode: CollectorMode,
    #[serde(default = "default_collector_status")]
    pub status: u16,
    #[serde(default)]
    pub delay_ms: u64,
    /// Misbehave on export requests instead of answering them (a raw TCP server then serves
    /// every endpoint, see `fault.rs`).
    #[serde(default)]
    pub fault: Option<CollectorFault>,
    /// Answer the faulted export requests (every `fault_every`-th) with this status instead of
    /// `status`: a collector that fails some exports with a 503 or 429 and accepts the others.
    /// Exclusive with `fault`.
    #[serde(default)]
    pub fault_status: Option<u16>,
    /// With `fault` or `fault_status`: misbehave on every Nth export request (counted over all
    /// endpoints), answer the others with `status`. 1 = every export request.
    #[serde(default = "default_fault_every")]
    pub fault_every: u64,
    /// A `Retry-After` header value (e.g. `"2"`, seconds) on the failing status answers: the
    /// `fault_status` ones when set, else every answer (then `status` must fail, e.g. 429).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Outages: from `from_ms` to `to_ms` after the first request is sent, every endpoint refuses
    /// connections (its listening socket stops listening, its open connections are closed); then it
    /// listens again on the same port.
    #[serde(default)]
    pub outages: Vec<Outage>,
    /// A collector that keeps going down and coming back: up for `up_ms`, down for `down_ms`,
    /// again and again from the first request on (down as in `outages`).
    #[serde(default)]
    pub flap: Option<Flap>,
}

impl Default for CollectorSpec {
    fn default() -> Self {
        CollectorSpec {
            mode: CollectorMode::Up,
            status: default_collector_status(),
            delay_ms: 0,
            fault: None,
            fault_status: None,
            fault_every: default_fault_every(),
            retry_after: None,
            outages: Vec::new(),
            flap: None,
        }
    }
}

/// One outage of the collector, in ms after the first request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// Up `up_ms`, then down `down_ms`, repeated (see `CollectorSpec::flap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    pub up_ms: u64,
    pub down_ms: u64,
}

impl CollectorSpec {
    /// Whether export request number `n` (1-based, over all endpoints) is one the collector fails.
    pub fn faults_request(&self, n: u64) -> bool {
        (self.fault.is_some() || self.fault_status.is_some())
            && n.is_multiple_of(self.fault_every.max(1))
    }

    /// How the collector fails export requests, for report lines (None: it does not).
    pub fn fault_name(&self) -> Option<String> {
        let every = match self.fault_every {
            1 => String::new(),
            n => format!(" (1 in {n})"),
        };
        let what = match (self.fault, self.fault_status) {
            (Some(f), _) => f.name().to_string(),
            (None, Some(s)) => format!("status {s}"),
            (None, None) => return None,
        };
        let ra = match (&self.retry_after, self.fault_status) {
            (Some(v), Some(_)) => format!(" + Retry-After {v}"),
            _ => String::new(),
        };
        Some(format!("{what}{ra}{every}"))
    }

    /// Whether the collector has a schedule of outages (`outages` or `flap`).
    pub fn scheduled(&self) -> bool {
        !self.outages.is_empty() || self.flap.is_some()
    }

    /// Whether the schedule has the collector up `t_ms` after the first request.
    pub fn up_at(&self, t_ms: u64) -> bool {
        if let Some(f) = self.flap {
            return t_ms % f.up_ms.saturating_add(f.down_ms).max(1) < f.up_ms;
        }
        !self
            .outages
            .iter()
            .any(|o| (o.from_ms..o.to_ms).contains(&t_ms))
    }

    /// The first change of the up/down schedule strictly after `after_ms` (ms after the first
    /// request): when, and whether the collector is up from then on. None: no change any more.
    pub fn next_change(&self, after_ms: u64) -> Option<(u64, bool)> {
        if let Some(f) = self.flap {
            let period = f.up_ms.saturating_add(f.down_ms).max(1);
            let start = after_ms - after_ms % period;
            let down_at = start.saturating_add(f.up_ms);
            return Some(if after_ms < down_at {
                (down_at, false)
            } else {
                (start.saturating_add(period), true)
            });
        }
        self.outages.iter().find_map(|o| {
            if after_ms < o.from_ms {
                Some((o.from_ms, false))
            } else if after_ms < o.to_ms {
                Some((o.to_ms, true))
            } else {
                None
            }
        })
    }
}

/// The ways the fake collector can fail an export after it has read the whole request. Each
/// one but `black_hole` leaves Envoy with a call that got response headers (or started to) and
/// then failed, which the HTTP async client reports as a reset, not as a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectorFault {
    /// `200 OK`, `content-length: 200`, 64 bytes of the body, then a TCP reset (SO_LINGER 0).
    HeadersThenReset,
    /// `202 Accepted`, `content-length: 200`, 64 bytes of the body, then a plain close (FIN).
    CloseMidBody,
    /// `202 Accepted` with `content-length: 100` and no body, then a TCP reset.
    ResetAfterHeaders,
    /// `200 OK` with a correct `content-length` of 40 MiB, sent in full (or until Envoy resets),
    /// more than Envoy buffers for an async call's response.
    OversizedBody,
    /// No answer at all: the connection stays open, unanswered, until Envoy closes it (its
    /// `timeout_ms`) or the collector stops.
    BlackHole,
}

impl CollectorFault {
    pub fn name(self) -> &'static str {
        match self {
            CollectorFault::HeadersThenReset => "headers_then_reset",
            CollectorFault::CloseMidBody => "close_mid_body",
            CollectorFault::ResetAfterHeaders => "reset_after_headers",
            CollectorFault::OversizedBody => "oversized_body",
            CollectorFault::BlackHole => "black_hole",
        }
    }
}

pub(super) fn default_collector_status() -> u16 {
    202
}

fn default_fault_every() -> u64 {
    1
}

fn default_status() -> u16 {
    200
}

fn default_path() -> String {
    "/".to_string()
}

fn default_method() -> String {
    "GET".to_string()
}

fn default_repeat() -> u32 {
    1
}

/// Headers as an ordered list; in YAML a map whose values are scalars or lists of scalars
/// (a list sends the header once per element), or generated: `{fill: S, len: N}` is one value of
/// S repeated to N bytes, `{value: S, times: N}` sends S N times (hostile-input scenarios).
#[derive(Debug, Clone, Default)]
pub struct HeaderList(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        let mut out = Vec::new();
        match v {
            Value::Null => {}
            Value::Mapping(m) => {
                for (k, val) in m {
                    let name = scalar_string(&k)
                        .ok_or_else(|| D::Error::custom("header names must be strings"))?;
                    match val {
                        Value::Sequence(items) => {
                            for it in items {
                                out.push((
                                    name.clone(),
                                    scalar_string(&it).ok_or_else(|| {
                                        D::Error::custom(format!("header {name}: bad value"))
                                    })?,
                                ));
                            }
                        }
                        Value::Mapping(gen) => {
                            let values = generated(&gen)
                                .map_err(|e| D::Error::custom(format!("header {name}: {e}")))?;
                            out.extend(values.into_iter().map(|v| (name.clone(), v)));
                        }
                        other => out.push((
                            name.clone(),
                            scalar_string(&other).ok_or_else(|| {
                                D::Error::custom(format!(
                                    "header {name}: value must be a scalar or a list"
                                ))
                            })?,
                        )),
                    }
                }
            }
            _ => return Err(D::Error::custom("headers must be a map")),
        }
        Ok(HeaderList(out))
    }
}

/// The values a generated header stands for (see [`HeaderList`]).
fn generated(m: &serde_yaml::Mapping) -> Result<Vec<String>, String> {
    let get = |k: &str| m.get(Value::String(k.into()));
    let count = |k: &str| {
        get(k)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(format!("{k} must be a non-negative integer"))
    };
    let text = |k: &str| {
        get(k)
            .and_then(scalar_string)
            .ok_or(format!("{k} must be a scalar"))
    };
    match (get("fill"), get("value"), m.len()) {
        (Some(_), None, 2) => {
            let (fill, len) = (text("fill")?, count("len")?);
            if fill.is_empty() {
                return Err("fill must not be empty".into());
            }
            Ok(vec![fill.chars().cycle().take(len).collect()])
        }
        (None, Some(_), 2) => Ok(vec![text("value")?; count("times")?]),
        _ => Err("a generated value is {fill, len} or {value, times}".into()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Envoy name whose listener receives the request.
    pub via: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub headers: HeaderList,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// Every response must be complete within this many milliseconds.
    #[serde(default)]
    pub max_ms: Option<u64>,
    /// Send the request and close the connection without a response (a client that gives up): as
    /// soon as the Envoy's upstream app has received it, at most this many milliseconds (without
    /// an upstream, after this many milliseconds). A response that arrives first fails the request.
    #[serde(default)]
    pub abort_after_ms: Option<u64>,
    /// Send the `repeat` requests over this many parallel client threads (default 1: one after
    /// another). Concurrent requests arrive at the upstream in no particular order.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// A request the proxy accepted and then closed without a single response byte is sent once
    /// more, as HTTP clients retry an idempotent request the server closed unanswered (RFC 9110
    /// §9.2.2). Only for GET/HEAD; the retries are counted in the report. For listener reloads,
    /// where Envoy closed up to 12 of 4000 connections that way around the filter-chain switch (089).
    #[serde(default)]
    pub retry_unanswered: bool,
    /// Before sending, wait this many milliseconds (e.g. past Envoy's VM reload backoff).
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Before sending, wait (at most 10 s) until the fake collector has misbehaved this many times
    /// (`collector.fault`).
    #[serde(default)]
    pub after_collector_faults: Option<u64>,
    /// While these requests are sent, replace an `lds: true` Envoy's listener with one whose plugin
    /// configuration differs (a new plugin instance; the old one drains).
    #[serde(default)]
    pub reload: Option<ReloadSpec>,
    /// Free text shown in the report.
    #[serde(default)]
    pub note: Option<String>,
}

/// A listener replacement under traffic (see `RequestSpec::reload`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    /// The Envoy (with `lds: true`) whose listener is replaced.
    pub envoy: String,
    /// Replace it once this many of the request's `repeat` requests have completed.
    #[serde(default)]
    pub after_requests: u32,
    /// Deep-merged onto the Envoy's own `plugin_config` (same rules) for the new listener.
    pub plugin_config: serde_json::Value,
}
