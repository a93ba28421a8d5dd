//! Scenario file schema (YAML). See test-harness/README.md for the documented form.

use crate::model::matcher::{scalar_string, Matcher};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub envoys: Vec<EnvoySpec>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub collector: CollectorSpec,
    #[serde(default)]
    pub requests: Vec<RequestSpec>,
    /// Quiescence timeout (default 15000 ms).
    #[serde(default)]
    pub quiescence_timeout_ms: Option<u64>,
    #[serde(default)]
    pub expect: Expect,
    /// Run a real collector for this scenario and point every Envoy's `zipkin` cluster at it.
    #[serde(default)]
    pub real_collector: Option<RealCollectorKind>,
}

/// A real collector the harness can start (see `collectors.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RealCollectorKind {
    /// Jaeger v2 (OTLP/HTTP and Zipkin receivers, in-memory storage, query API).
    Jaeger,
    /// Zipkin server (in-memory storage).
    Zipkin,
}

impl RealCollectorKind {
    pub fn name(self) -> &'static str {
        match self {
            RealCollectorKind::Jaeger => "jaeger",
            RealCollectorKind::Zipkin => "zipkin",
        }
    }
}

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
    /// With `fault`: misbehave on every Nth export request (counted over all endpoints), answer
    /// the others with `status`. 1 = every export request.
    #[serde(default = "default_fault_every")]
    pub fault_every: u64,
}

impl Default for CollectorSpec {
    fn default() -> Self {
        CollectorSpec {
            mode: CollectorMode::Up,
            status: default_collector_status(),
            delay_ms: 0,
            fault: None,
            fault_every: default_fault_every(),
        }
    }
}

/// The ways the fake collector can fail an export after it has read the whole request. Each
/// one leaves Envoy with a call that got response headers (or started to) and then failed, which
/// the HTTP async client reports as a reset, not as a response.
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
}

impl CollectorFault {
    pub fn name(self) -> &'static str {
        match self {
            CollectorFault::HeadersThenReset => "headers_then_reset",
            CollectorFault::CloseMidBody => "close_mid_body",
            CollectorFault::ResetAfterHeaders => "reset_after_headers",
            CollectorFault::OversizedBody => "oversized_body",
        }
    }
}

fn default_collector_status() -> u16 {
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
/// (a list sends the header once per element).
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

/// An exact count or an inclusive `[lo, hi]` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CountSpec {
    Exact(u64),
    Range([u64; 2]),
}

impl CountSpec {
    pub fn accepts(&self, n: u64) -> bool {
        match *self {
            CountSpec::Exact(x) => n == x,
            CountSpec::Range([lo, hi]) => lo <= n && n <= hi,
        }
    }
}

impl std::fmt::Display for CountSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CountSpec::Exact(x) => write!(f, "{x}"),
            CountSpec::Range([lo, hi]) => write!(f, "[{lo}, {hi}]"),
        }
    }
}

/// A request index at an upstream, a list of indices, or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestSel {
    Index(usize),
    List(Vec<usize>),
    All,
}

impl<'de> Deserialize<'de> for RequestSel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) if s == "all" => Ok(RequestSel::All),
            Value::Number(n) if n.as_u64().is_some() => {
                Ok(RequestSel::Index(n.as_u64().unwrap_or_default() as usize))
            }
            Value::Sequence(items) if !items.is_empty() => items
                .iter()
                .map(|i| i.as_u64().map(|n| n as usize))
                .collect::<Option<Vec<usize>>>()
                .map(RequestSel::List)
                .ok_or_else(|| D::Error::custom("request list entries must be indices")),
            _ => Err(D::Error::custom(format!(
                "request must be an index, a list of indices or \"all\", got {v:?}"
            ))),
        }
    }
}

impl std::fmt::Display for RequestSel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestSel::Index(i) => write!(f, "#{i}"),
            RequestSel::List(l) => write!(
                f,
                "#{}",
                l.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",#")
            ),
            RequestSel::All => write!(f, "all"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderExpect {
    pub request: RequestSel,
    pub headers: BTreeMap<String, Matcher>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpanMatcher {
    #[serde(default, rename = "traceId")]
    pub trace_id: Option<Matcher>,
    #[serde(default)]
    pub id: Option<Matcher>,
    #[serde(default, rename = "parentId")]
    pub parent_id: Option<Matcher>,
    #[serde(default)]
    pub kind: Option<Matcher>,
    #[serde(default)]
    pub name: Option<Matcher>,
    #[serde(default, rename = "serviceName")]
    pub service_name: Option<Matcher>,
    #[serde(default)]
    pub debug: Option<Matcher>,
    /// Name of the Envoy (scenario name) that exported the span.
    #[serde(default)]
    pub envoy: Option<Matcher>,
    #[serde(default)]
    pub tags: BTreeMap<String, Matcher>,
    /// Any other span field by dotted path, e.g. `remoteEndpoint.ipv4`.
    #[serde(default)]
    pub fields: BTreeMap<String, Matcher>,
    /// Index of another matcher in the same list: this span's parentId is that span's id, same traceId.
    #[serde(default)]
    pub parent: Option<usize>,
    #[serde(default)]
    pub duration_min_us: Option<u64>,
    /// Free text shown in the report.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpansExpect {
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub count_between: Option<[u64; 2]>,
    /// Number of distinct traceIds.
    #[serde(default)]
    pub traces: Option<u64>,
    /// Every trace has exactly this many spans.
    #[serde(default)]
    pub per_trace: Option<u64>,
    /// Number of spans exported by each Envoy.
    #[serde(default)]
    pub per_envoy: BTreeMap<String, CountSpec>,
    #[serde(default, rename = "match")]
    pub matchers: Vec<SpanMatcher>,
    #[serde(default)]
    pub all_tags: BTreeMap<String, Matcher>,
    /// A span matcher (without `parent`) that every span must satisfy.
    #[serde(default)]
    pub every: Option<SpanMatcher>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogExpect {
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub not_contains: Vec<String>,
    /// Regexes that must each match at least one log line.
    #[serde(default)]
    pub matches: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CollectorExpect {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
    /// Every export request carries at most this many spans.
    #[serde(default)]
    pub max_spans_per_request: Option<u64>,
    /// Every export request carries this many spans (exact or [lo, hi]).
    #[serde(default)]
    pub spans_per_request: Option<CountSpec>,
    /// Most export requests the collector held open (received, not yet answered) at one time.
    #[serde(default)]
    pub max_concurrent: Option<CountSpec>,
    /// Export requests the collector misbehaved on (`collector.fault`).
    #[serde(default)]
    pub faulted: Option<CountSpec>,
    #[serde(default)]
    pub path: Option<Matcher>,
    #[serde(default)]
    pub headers: BTreeMap<String, Matcher>,
}

/// One name or a list of names.
#[derive(Debug, Clone, Default)]
pub struct NameList(pub Vec<String>);

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => NameList(vec![s]),
            OneOrMany::Many(v) => NameList(v),
        })
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Envoys whose module must have trapped (the failure-policy fixture): their log must show the
    /// trap, where every other Envoy's must show none.
    #[serde(default)]
    pub trapped: Vec<String>,
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Vec<HeaderExpect>>,
    /// Number of requests each upstream received.
    #[serde(default)]
    pub upstream_requests: BTreeMap<String, CountSpec>,
    #[serde(default)]
    pub spans: Option<SpansExpect>,
    #[serde(default)]
    pub upstream_sampled_between: BTreeMap<String, [u64; 2]>,
    #[serde(default)]
    pub sampled_matches_spans: NameList,
    #[serde(default)]
    pub metrics: BTreeMap<String, BTreeMap<String, CountSpec>>,
    #[serde(default)]
    pub logs: BTreeMap<String, LogExpect>,
    #[serde(default)]
    pub collector_requests: Option<CollectorExpect>,
    /// Counters in `/stats/prometheus`, by suffix: `spans_sampled: 1` needs the exact line
    /// `meshtrace_spans_sampled{} 1` (and `# TYPE meshtrace_spans_sampled counter`).
    #[serde(default)]
    pub prometheus: BTreeMap<String, BTreeMap<String, CountSpec>>,
    /// Headers that every request an upstream received carries, each value different.
    #[serde(default)]
    pub upstream_unique: BTreeMap<String, NameList>,
    /// Any Envoy stat: the sum of the stats whose full name matches `name_re`.
    #[serde(default)]
    pub envoy_stats: BTreeMap<String, Vec<StatExpect>>,
    /// What the real collector stored, read back through its query API.
    #[serde(default)]
    pub collected: Option<CollectedExpect>,
}

/// Expectations on the spans a real collector stored (`real_collector:` scenarios).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CollectedExpect {
    /// Distinct trace ids stored.
    #[serde(default)]
    pub traces: Option<CountSpec>,
    /// Spans stored in total.
    #[serde(default)]
    pub spans: Option<CountSpec>,
    /// Every stored trace has this many spans.
    #[serde(default)]
    pub per_trace: Option<CountSpec>,
    /// The exact set of service names stored.
    #[serde(default)]
    pub services: Option<BTreeSet<String>>,
    /// Span matchers as in `expect.spans.match`, applied to the stored spans (`envoy` is the
    /// service name there).
    #[serde(default, rename = "match")]
    pub matchers: Vec<SpanMatcher>,
    /// Every child span lies within its parent (start no earlier, end no later than parent end +
    /// 1 ms).
    #[serde(default)]
    pub nested: bool,
    /// Nothing at all was stored.
    #[serde(default)]
    pub empty: bool,
    /// Zipkin only: headless Chromium opens each stored trace in the Zipkin UI and checks the page
    /// shows its trace id, span count and services.
    #[serde(default)]
    pub zipkin_ui: Option<ZipkinUiExpect>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ZipkinUiExpect {
    /// File name of a screenshot of the first trace's page, saved in the run directory
    /// (`$MESHTRACE_UI_SCREENSHOT` overrides it with a path, e.g. to refresh docs/).
    #[serde(default)]
    pub screenshot: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatExpect {
    pub name_re: String,
    pub value: CountSpec,
}

impl Scenario {
    pub fn from_yaml(text: &str) -> Result<Scenario, String> {
        let sc: Scenario = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        sc.validate()?;
        Ok(sc)
    }

    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Scenario::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn envoy(&self, name: &str) -> Option<&EnvoySpec> {
        self.envoys.iter().find(|e| e.name == name)
    }

    /// The upstream name the envoy's `app` cluster points at (None when unreachable/absent).
    pub fn upstream_of(&self, envoy: &EnvoySpec) -> Option<String> {
        if envoy.upstream_unreachable
            || envoy.upstream_envoy.is_some()
            || self.relayed_by(&envoy.name).is_some()
        {
            return None;
        }
        if let Some(u) = &envoy.upstream {
            return Some(u.clone());
        }
        if self.upstreams.len() == 1 {
            return Some(self.upstreams[0].name.clone());
        }
        None
    }

    /// The Envoy whose exports `relay` forwards (its `collector_via` names `relay`).
    pub fn relayed_by(&self, relay: &str) -> Option<&EnvoySpec> {
        self.envoys
            .iter()
            .find(|e| e.collector_via.as_deref() == Some(relay))
    }

    /// The Envoys `e` must start after: its relay (`collector_via`) and its `upstream_envoy`.
    pub fn start_deps<'a>(&self, e: &'a EnvoySpec) -> Vec<&'a str> {
        e.collector_via
            .iter()
            .chain(e.upstream_envoy.iter())
            .map(String::as_str)
            .collect()
    }

    /// Start order in waves: every Envoy starts after the Envoys it depends on. Err on a cycle.
    pub fn start_waves(&self) -> Result<Vec<Vec<&EnvoySpec>>, String> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut waves = Vec::new();
        while done.len() < self.envoys.len() {
            let wave: Vec<&EnvoySpec> = self
                .envoys
                .iter()
                .filter(|e| !done.contains(e.name.as_str()))
                .filter(|e| {
                    self.start_deps(e)
                        .iter()
                        .all(|d| done.contains(d) || self.envoy(d).is_none())
                })
                .collect();
            if wave.is_empty() {
                return Err("envoys: collector_via/upstream_envoy form a cycle".to_string());
            }
            done.extend(wave.iter().map(|e| e.name.as_str()));
            waves.push(wave);
        }
        Ok(waves)
    }

    fn validate_real_collector(&self, errs: &mut Vec<String>) {
        for e in &self.envoys {
            let Some(t) = &e.upstream_envoy else { continue };
            match self.envoy(t) {
                None => errs.push(format!("envoy {}: upstream_envoy {t} unknown", e.name)),
                Some(x) if x.name == e.name => {
                    errs.push(format!("envoy {}: upstream_envoy is itself", e.name))
                }
                Some(x) if x.expect_start_failure || e.expect_start_failure => errs.push(format!(
                    "envoy {}: upstream_envoy and expect_start_failure do not mix",
                    e.name
                )),
                Some(_) => {}
            }
            if e.upstream.is_some() || e.upstream_unreachable {
                errs.push(format!(
                    "envoy {}: upstream_envoy excludes upstream/upstream_unreachable",
                    e.name
                ));
            }
        }
        if let Err(e) = self.start_waves() {
            errs.push(e);
        }
        let real = self.real_collector.is_some();
        if !real {
            if self.expect.collected.is_some() {
                errs.push("expect.collected needs real_collector".to_string());
            }
            for u in &self.upstreams {
                if u.report_span.is_some() {
                    errs.push(format!(
                        "upstream {}: report_span needs real_collector",
                        u.name
                    ));
                }
            }
            return;
        }
        let wants_ui = self
            .expect
            .collected
            .as_ref()
            .is_some_and(|c| c.zipkin_ui.is_some());
        if wants_ui && self.real_collector != Some(RealCollectorKind::Zipkin) {
            errs.push("expect.collected.zipkin_ui needs real_collector: zipkin".to_string());
        }
        if self.collector.mode != CollectorMode::Up
            || self.collector.status != default_collector_status()
            || self.collector.delay_ms != 0
            || self.collector.fault.is_some()
        {
            errs.push(
                "real_collector: the fake collector's `collector:` settings do not apply"
                    .to_string(),
            );
        }
        for e in &self.envoys {
            if e.collector_via.is_some() {
                errs.push(format!(
                    "envoy {}: collector_via does not mix with real_collector",
                    e.name
                ));
            }
        }
        if let Some(c) = &self.expect.collected {
            for (i, m) in c.matchers.iter().enumerate() {
                if let Some(p) = m.parent {
                    if p >= c.matchers.len() || p == i {
                        errs.push(format!("expect.collected.match[{i}]: bad parent index {p}"));
                    }
                }
            }
            if c.empty
                && (c.spans.is_some_and(|s| !s.accepts(0))
                    || c.traces.is_some_and(|s| !s.accepts(0))
                    || !c.matchers.is_empty())
            {
                errs.push("expect.collected: empty contradicts spans/traces/match".to_string());
            }
        }
    }

    /// Checks of the collector fault modes, concurrent requests and reloads.
    fn validate_load(&self, errs: &mut Vec<String>) {
        let c = &self.collector;
        if c.fault_every == 0 {
            errs.push("collector.fault_every must be at least 1".to_string());
        }
        if c.fault.is_some() && c.mode == CollectorMode::Down {
            errs.push("collector: fault needs mode up".to_string());
        }
        let wants_faulted = self
            .expect
            .collector_requests
            .as_ref()
            .is_some_and(|e| e.faulted.is_some());
        if c.fault.is_none() && wants_faulted {
            errs.push("expect.collector_requests.faulted needs collector.fault".to_string());
        }
        for e in self.envoys.iter().filter(|e| e.lds) {
            // Envoy refuses file-based LDS without a node cluster; the node id is there anyway
            // (`--service-node` or node.id).
            let cluster = e.node.as_ref().is_some_and(|n| n.cluster.is_some())
                || e.extra_args.iter().any(|a| a == "--service-cluster");
            if !cluster {
                errs.push(format!(
                    "envoy {}: lds needs a node cluster (node.cluster or --service-cluster)",
                    e.name
                ));
            }
        }
        for (i, r) in self.requests.iter().enumerate() {
            let parallel = r.concurrency.unwrap_or(1);
            if parallel == 0 {
                errs.push(format!("request #{i}: concurrency must be at least 1"));
            }
            if r.abort_after_ms.is_some() && (parallel > 1 || r.reload.is_some()) {
                errs.push(format!(
                    "request #{i}: abort_after_ms is sequential only (no concurrency/reload)"
                ));
            }
            if r.after_collector_faults.is_some() && c.fault.is_none() {
                errs.push(format!(
                    "request #{i}: after_collector_faults needs collector.fault"
                ));
            }
            let Some(rl) = &r.reload else { continue };
            match self.envoy(&rl.envoy) {
                None => errs.push(format!("request #{i}: reload: unknown envoy {}", rl.envoy)),
                Some(e) if !e.lds => errs.push(format!(
                    "request #{i}: reload: envoy {} needs `lds: true`",
                    rl.envoy
                )),
                Some(e) if e.plugin_config_raw.is_some() => errs.push(format!(
                    "request #{i}: reload: envoy {} has plugin_config_raw, nothing to merge onto",
                    rl.envoy
                )),
                Some(_) => {}
            }
            if !rl.plugin_config.is_object() {
                errs.push(format!("request #{i}: reload.plugin_config must be a map"));
            }
            if rl.after_requests >= r.repeat {
                errs.push(format!(
                    "request #{i}: reload.after_requests must be below repeat ({})",
                    r.repeat
                ));
            }
        }
    }

    /// Cross-reference checks.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        let envoy_names: BTreeSet<&str> = self.envoys.iter().map(|e| e.name.as_str()).collect();
        let up_names: BTreeSet<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
        if envoy_names.len() != self.envoys.len() {
            errs.push("duplicate envoy names".to_string());
        }
        if up_names.len() != self.upstreams.len() {
            errs.push("duplicate upstream names".to_string());
        }
        if self.envoys.is_empty() {
            errs.push("no envoys".to_string());
        }
        for e in &self.envoys {
            if let Some(u) = &e.upstream {
                if !up_names.contains(u.as_str()) {
                    errs.push(format!("envoy {}: unknown upstream {u}", e.name));
                }
                if e.upstream_unreachable {
                    errs.push(format!(
                        "envoy {}: upstream and upstream_unreachable are exclusive",
                        e.name
                    ));
                }
            } else if !e.upstream_unreachable
                && !e.expect_start_failure
                && e.upstream_envoy.is_none()
                && self.relayed_by(&e.name).is_none()
                && self.upstreams.len() != 1
            {
                errs.push(format!(
                    "envoy {}: name an upstream (there are {} upstreams) or set upstream_unreachable",
                    e.name,
                    self.upstreams.len()
                ));
            }
            if e.plugin_config.is_some() && e.plugin_config_raw.is_some() {
                errs.push(format!(
                    "envoy {}: plugin_config and plugin_config_raw are exclusive",
                    e.name
                ));
            }
            if let Some(pc) = &e.plugin_config {
                if !pc.is_object() {
                    errs.push(format!("envoy {}: plugin_config must be a map", e.name));
                }
            }
        }
        self.validate_real_collector(&mut errs);
        self.validate_load(&mut errs);
        let mut relays = BTreeSet::new();
        for e in &self.envoys {
            if let Some(meta) = e.node.as_ref().and_then(|n| n.metadata.as_ref()) {
                if !meta.is_object() {
                    errs.push(format!("envoy {}: node.metadata must be a map", e.name));
                }
            }
            let Some(via) = &e.collector_via else {
                continue;
            };
            match self.envoy(via) {
                None => errs.push(format!("envoy {}: collector_via {via} unknown", e.name)),
                Some(r) => {
                    if r.name == e.name || r.collector_via.is_some() {
                        errs.push(format!(
                            "envoy {}: collector_via {via} must be another Envoy that exports directly",
                            e.name
                        ));
                    }
                    if r.upstream.is_some() || r.upstream_unreachable {
                        errs.push(format!(
                            "envoy {via}: relays {}'s exports, so it takes no upstream",
                            e.name
                        ));
                    }
                    if r.expect_start_failure || e.expect_start_failure {
                        errs.push(format!(
                            "envoy {}: collector_via and expect_start_failure do not mix",
                            e.name
                        ));
                    }
                }
            }
            if !relays.insert(via.as_str()) {
                errs.push(format!("envoy {via} relays for more than one Envoy"));
            }
            if self.collector.mode == CollectorMode::Down {
                errs.push(format!(
                    "envoy {}: collector_via needs the collector up",
                    e.name
                ));
            }
        }
        for u in &self.upstreams {
            for c in &u.responses {
                if !c.when_path_prefix.starts_with('/') {
                    errs.push(format!(
                        "upstream {}: responses.when_path_prefix must start with /",
                        u.name
                    ));
                }
            }
            if let Some(n) = &u.next {
                if !envoy_names.contains(n.envoy.as_str()) {
                    errs.push(format!(
                        "upstream {}: next.envoy {} unknown",
                        u.name, n.envoy
                    ));
                }
            }
        }
        for (i, r) in self.requests.iter().enumerate() {
            if self.envoy(&r.via).is_none() {
                errs.push(format!("request #{i}: unknown envoy {}", r.via));
            }
            if r.abort_after_ms.is_some() && (r.expect_status.is_some() || r.max_ms.is_some()) {
                errs.push(format!(
                    "request #{i}: abort_after_ms expects no response, so no expect_status/max_ms"
                ));
            }
        }
        let ex = &self.expect;
        let up_keys = ex
            .upstream_headers
            .keys()
            .chain(ex.upstream_requests.keys())
            .chain(ex.upstream_sampled_between.keys())
            .chain(ex.upstream_unique.keys())
            .chain(ex.sampled_matches_spans.0.iter());
        for k in up_keys {
            if !up_names.contains(k.as_str()) {
                errs.push(format!("expect: unknown upstream {k}"));
            }
        }
        let mut envoy_keys: Vec<&String> = ex
            .metrics
            .keys()
            .chain(ex.logs.keys())
            .chain(ex.prometheus.keys())
            .chain(ex.envoy_stats.keys())
            .collect();
        for (envoy, list) in &ex.envoy_stats {
            for st in list {
                if let Err(e) = regex::Regex::new(&st.name_re) {
                    errs.push(format!("expect.envoy_stats.{envoy}: bad name_re: {e}"));
                }
            }
        }
        for (envoy, le) in &ex.logs {
            for re in &le.matches {
                if let Err(e) = regex::Regex::new(re) {
                    errs.push(format!("expect.logs.{envoy}.matches: bad regex: {e}"));
                }
            }
        }
        if let Some(sp) = &ex.spans {
            envoy_keys.extend(sp.per_envoy.keys());
            for (i, m) in sp.matchers.iter().enumerate() {
                if let Some(p) = m.parent {
                    if p >= sp.matchers.len() || p == i {
                        errs.push(format!("expect.spans.match[{i}]: bad parent index {p}"));
                    }
                }
            }
            if sp.every.as_ref().is_some_and(|m| m.parent.is_some()) {
                errs.push("expect.spans.every: `parent` needs a match list".to_string());
            }
            if sp.count.is_some() && sp.count_between.is_some() {
                errs.push("expect.spans: count and count_between are exclusive".to_string());
            }
        }
        for k in envoy_keys {
            if !envoy_names.contains(k.as_str()) {
                errs.push(format!("expect: unknown envoy {k}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_example() {
        let sc = Scenario::from_yaml(
            r#"
name: t
envoys:
  - name: gw
    config: gateway
    plugin_config: {collector: {flush_interval_ms: 100}}
upstreams:
  - name: app
requests:
  - via: gw
    headers: {x-b3-sampled: 1, x-dup: [a, b]}
    repeat: 2
expect:
  upstream_headers:
    app:
      - request: 0
        headers: {x-b3-sampled: "1", x-b3-parentspanid: {absent: true}}
      - request: all
        headers: {x-b3-traceid: {re: "^[0-9a-f]{32}$"}}
  spans:
    count: 2
    match:
      - {kind: SERVER, tags: {http.status_code: 200}}
      - {parent: 0}
  metrics: {gw: {spans_sampled: 2, spans_exported: [1, 2]}}
  sampled_matches_spans: app
"#,
        )
        .unwrap();
        assert_eq!(sc.requests[0].headers.0.len(), 3);
        assert_eq!(sc.requests[0].headers.0[0].1, "1");
        assert_eq!(sc.upstream_of(&sc.envoys[0]).as_deref(), Some("app"));
        assert_eq!(
            sc.expect.upstream_headers["app"][1].request,
            RequestSel::All
        );
        assert!(sc.expect.metrics["gw"]["spans_exported"].accepts(2));
        assert!(!sc.expect.metrics["gw"]["spans_sampled"].accepts(1));
    }

    #[test]
    fn readme_example_is_a_valid_scenario() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("## Scenario schema")
            .and_then(|i| readme[i..].find("```yaml").map(|j| i + j + 7))
            .unwrap();
        let end = start + readme[start..].find("```").unwrap();
        let sc = Scenario::from_yaml(&readme[start..end]).unwrap();
        assert_eq!(sc.envoys.len(), 2);
        assert_eq!(
            sc.expect.spans.as_ref().unwrap().matchers[1].parent,
            Some(0)
        );
    }

    #[test]
    fn demo_and_shipped_scenarios_parse() {
        Scenario::from_yaml(crate::report::demo::DEMO_YAML).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        let mut names = BTreeSet::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                let sc = Scenario::load(&e.path()).unwrap();
                let stem = e.path().file_stem().unwrap().to_string_lossy().into_owned();
                assert_eq!(sc.name, stem, "scenario name = file name");
                assert!(names.insert(sc.name), "duplicate scenario name {stem}");
                n += 1;
            }
        }
        assert!(n >= 30, "only {n} scenarios");
    }

    #[test]
    fn new_schema_parts_parse_and_validate() {
        let sc = Scenario::from_yaml(
            r#"
name: t
envoys:
  - {name: gw, config: gateway, collector_via: rel, node: {id: n, metadata: {NAMESPACE: ns}}}
  - {name: rel, config: sidecar-inbound}
upstreams:
  - name: app
    responses: [{when_path_prefix: /g, headers: {grpc-status: "13"}}]
requests:
  - {via: gw, abort_after_ms: 50}
  - {via: gw, max_ms: 100}
expect:
  upstream_headers: {app: [{request: [0, 2], headers: {x-a: "1"}}]}
  upstream_unique: {app: x-b3-traceid}
  prometheus: {gw: {spans_sampled: 1}}
  envoy_stats: {gw: [{name_re: "^listener", value: [1, 2]}]}
  collector_requests: {max_concurrent: 2, spans_per_request: [1, 5]}
  spans: {every: {kind: SERVER}}
"#,
        )
        .unwrap();
        assert_eq!(sc.relayed_by("rel").unwrap().name, "gw");
        assert_eq!(
            sc.upstream_of(&sc.envoys[1]),
            None,
            "a relay has no app upstream"
        );
        assert_eq!(sc.upstreams[0].responses[0].status, 200);
        assert_eq!(
            sc.expect.upstream_headers["app"][0].request,
            RequestSel::List(vec![0, 2])
        );
        let bad = |yaml: &str| Scenario::from_yaml(yaml).unwrap_err();
        let e = bad("name: t\nenvoys: [{name: gw, config: gateway, collector_via: gw}]\n");
        assert!(e.contains("another Envoy"), "{e}");
        let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nrequests: [{via: gw, abort_after_ms: 5, expect_status: 200}]\n");
        assert!(e.contains("abort_after_ms"), "{e}");
        let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true, node: {metadata: [1]}}]\n");
        assert!(e.contains("node.metadata"), "{e}");
        let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nexpect: {logs: {gw: {matches: ['(']}}}\n");
        assert!(e.contains("bad regex"), "{e}");
    }

    #[test]
    fn real_collector_schema() {
        let sc = Scenario::from_yaml(
            r#"
name: t
real_collector: jaeger
envoys:
  - {name: gw, config: gateway, upstream_envoy: side}
  - {name: side, config: sidecar-inbound}
upstreams: [{name: app, report_span: {service: app}}]
expect:
  collected:
    traces: 1
    spans: [2, 3]
    services: [a, b]
    nested: true
    match: [{serviceName: a}, {parent: 0}]
"#,
        )
        .unwrap();
        assert_eq!(sc.real_collector, Some(RealCollectorKind::Jaeger));
        assert_eq!(sc.upstream_of(&sc.envoys[0]), None);
        let waves = sc.start_waves().unwrap();
        assert_eq!(waves.len(), 2);
        assert_eq!(waves[0][0].name, "side");
        let c = sc.expect.collected.as_ref().unwrap();
        assert!(c.spans.unwrap().accepts(3) && c.nested && c.matchers.len() == 2);
        let bad = |yaml: &str| Scenario::from_yaml(yaml).unwrap_err();
        let e = bad("name: t\nenvoys: [{name: gw, config: gateway, upstream_unreachable: true}]\nexpect: {collected: {empty: true}}\n");
        assert!(e.contains("needs real_collector"), "{e}");
        let e = bad("name: t\nenvoys: [{name: gw, config: gateway}]\nupstreams: [{name: a, report_span: {service: x}}]\n");
        assert!(e.contains("report_span needs real_collector"), "{e}");
        let e = bad("name: t\nenvoys: [{name: a, config: gateway, upstream_envoy: b}, {name: b, config: gateway, upstream_envoy: a}]\n");
        assert!(e.contains("cycle"), "{e}");
        let e = bad("name: t\nreal_collector: zipkin\ncollector: {mode: down}\nenvoys: [{name: a, config: gateway, upstream_unreachable: true}]\n");
        assert!(e.contains("do not apply"), "{e}");
        let e = bad("name: t\nreal_collector: zipkin\nenvoys: [{name: a, config: gateway, upstream_unreachable: true}]\nexpect: {collected: {empty: true, spans: 2}}\n");
        assert!(e.contains("contradicts"), "{e}");
    }

    #[test]
    fn rejects_bad_references_and_unknown_fields() {
        let e = Scenario::from_yaml(
            "name: t\nenvoys: [{name: gw, config: gateway, upstream: nope}]\nrequests: [{via: x}]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("unknown upstream nope") && e.contains("unknown envoy x"),
            "{e}"
        );
        let e = Scenario::from_yaml("name: t\nenvoys: [{name: gw, config: gateway, bogus: 1}]\n")
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e =
            Scenario::from_yaml("name: t\nenvoys: [{name: gw, config: gatewayy}]\n").unwrap_err();
        assert!(e.contains("gatewayy"), "{e}");
    }
}
