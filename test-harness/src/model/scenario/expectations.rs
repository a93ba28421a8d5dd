//! The `expect:` block of a scenario: what the run must have observed.

use crate::model::matcher::{Matcher, Pattern};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

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
    pub matches: Vec<Pattern>,
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
    /// Export requests the collector misbehaved on (`collector.fault` or `fault_status`).
    #[serde(default)]
    pub faulted: Option<CountSpec>,
    /// With `collector.outages`/`flap`: after each time the collector came back up while requests
    /// were still being sent for at least this long, its first acknowledged export request came
    /// within this many ms (the fake collector's clock, from listening again to the answer).
    #[serde(default)]
    pub resumed_within_ms: Option<u64>,
    /// After each answer with `Retry-After: S` (seconds), the same Envoy sent no export request
    /// for S seconds (50 ms of slack). A request already in flight when the answer went out is not
    /// told apart: use it with `collector.max_in_flight: 1`.
    #[serde(default)]
    pub honours_retry_after: bool,
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
    pub name_re: Pattern,
    pub value: CountSpec,
}
