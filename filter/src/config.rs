//! Plugin configuration: the JSON Envoy's `configuration` or Istio's `pluginConfig` delivers.
//!
//! Every problem is reported as one [`ConfigError`] naming the JSON path and the reason, because the
//! operator only sees a log line and must be able to fix the field from it.

use std::collections::BTreeMap;
use std::fmt;

mod json;

use crate::propagation::{Format, Formats};
use json::Object;

/// Headers that carry credentials: never a tag, unless `tags.unsafe_record_sensitive_headers`.
pub const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

pub const DEFAULT_COLLECTOR_CLUSTER: &str = "outbound|9411||zipkin.istio-system.svc.cluster.local";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service_name: Option<String>,
    pub span_kind: SpanKindChoice,
    pub span_shape: SpanShape,
    pub span_ids: SpanIds,
    pub sampling: Sampling,
    pub extract: Formats,
    pub inject: Formats,
    pub tags: Tags,
    pub collector: Collector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanKindChoice {
    #[default]
    Auto,
    Server,
    Client,
}

/// Spans per proxied stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanShape {
    /// One span (kind from `span_kind`), as Envoy's tracer records.
    #[default]
    One,
    /// A SERVER span for the downstream side and a CLIENT child for the upstream call, as Linkerd
    /// and Zipkin-instrumented proxies record.
    ServerClient,
}

/// How a SERVER span relates to the caller's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanIds {
    /// A new span id, child of the caller's span (OpenTelemetry, Jaeger, Envoy).
    #[default]
    Child,
    /// The caller's span id reused (Zipkin's shared RPC spans: one id for both sides of a call).
    Shared,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub rate: f64,
    pub override_header: String,
    pub force_header: String,
    pub trust_upstream: bool,
    pub trust_debug: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tags {
    /// `static` in the document.
    pub fixed: BTreeMap<String, String>,
    pub request_headers: Vec<String>,
    /// More headers never to record, beside [`SENSITIVE_HEADERS`].
    pub deny_headers: Vec<String>,
    /// The one switch that lets a denied header become a tag.
    pub unsafe_record_sensitive_headers: bool,
    pub max_value_length: usize,
    pub record_query: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    ZipkinJson,
    OtlpJson,
}

impl ExportFormat {
    /// The collector path each format is usually served at (Zipkin v2 API, OTLP/HTTP).
    pub fn default_path(self) -> &'static str {
        match self {
            ExportFormat::ZipkinJson => "/api/v2/spans",
            ExportFormat::OtlpJson => "/v1/traces",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Collector {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub format: ExportFormat,
    pub flush_interval_ms: u64,
    pub max_batch: usize,
    pub max_queue: usize,
    pub timeout_ms: u64,
    pub max_in_flight: usize,
    pub retry: Retry,
}

/// Bounded retries of failed export calls (see `export::scheduler` for which failures retry).
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Sends per batch, the first included; 1 turns retries off.
    pub max_attempts: u64,
    /// The wait before the first retry (jittered into its upper half), doubling per retry.
    pub initial_backoff_ms: u64,
    /// No wait is longer, a collector's `Retry-After` included.
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The JSON shape; converted to [`Config`] after range checks. Its `Default` is the empty
/// document's, so [`Config::default`] restates none of the parser's defaults.
#[derive(Debug, Default)]
struct Raw {
    service_name: Option<String>,
    span_kind: SpanKindChoice,
    span_shape: SpanShape,
    span_ids: SpanIds,
    sampling: Sampling,
    propagation: RawPropagation,
    tags: Tags,
    collector: Collector,
}

#[derive(Debug)]
struct RawPropagation {
    extract: Vec<Format>,
    inject: Vec<Format>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            rate: 0.01,
            override_header: String::new(),
            force_header: "x-envoy-force-trace".to_string(),
            trust_upstream: true,
            trust_debug: true,
        }
    }
}

impl Default for Tags {
    fn default() -> Self {
        Tags {
            fixed: BTreeMap::new(),
            request_headers: Vec::new(),
            deny_headers: Vec::new(),
            unsafe_record_sensitive_headers: false,
            max_value_length: 256,
            record_query: false,
        }
    }
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            cluster: DEFAULT_COLLECTOR_CLUSTER.to_string(),
            authority: "zipkin.istio-system:9411".to_string(),
            // Empty means the format's usual path (see `ExportFormat::default_path`).
            path: String::new(),
            format: ExportFormat::ZipkinJson,
            flush_interval_ms: 1000,
            max_batch: 100,
            max_queue: 1000,
            timeout_ms: 5000,
            max_in_flight: 2,
            retry: Retry::default(),
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            initial_backoff_ms: 500,
            max_backoff_ms: 10_000,
        }
    }
}

impl Default for RawPropagation {
    fn default() -> Self {
        RawPropagation {
            extract: vec![Format::B3Multi, Format::B3Single],
            inject: vec![Format::B3Multi],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        build(Raw::default())
    }
}

/// Parses and validates the plugin configuration. Empty input means all defaults.
pub fn parse(input: &[u8]) -> Result<Config, ConfigError> {
    let text =
        std::str::from_utf8(input).map_err(|_| error("(root)", "configuration is not UTF-8"))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json stops at the first bad token (e.g. `1e309`, out of f64's range) with only a
        // position; the key just before it is what the operator looks for.
        let near = key_before(text, e.line(), e.column())
            .map(|k| format!(" (after key {})", quoted(k)))
            .unwrap_or_default();
        error("(root)", &format!("not valid JSON: {e}{near}"))
    })?;
    let raw = read(Object::root(&value)?)?;
    check_sampling_and_tags(&raw)?;
    check_collector(&raw)?;
    check_propagation(&raw)?;
    Ok(build(raw))
}

/// The document's names for the enums (`snake_case` of the variants).
const SPAN_KINDS: [(&str, SpanKindChoice); 3] = [
    ("auto", SpanKindChoice::Auto),
    ("server", SpanKindChoice::Server),
    ("client", SpanKindChoice::Client),
];
const SPAN_SHAPES: [(&str, SpanShape); 2] = [
    ("one", SpanShape::One),
    ("server_client", SpanShape::ServerClient),
];
const SPAN_IDS: [(&str, SpanIds); 2] = [("child", SpanIds::Child), ("shared", SpanIds::Shared)];
const FORMATS: [(&str, Format); 3] = [
    ("b3_multi", Format::B3Multi),
    ("b3_single", Format::B3Single),
    ("w3c", Format::W3c),
];
const EXPORT_FORMATS: [(&str, ExportFormat); 2] = [
    ("zipkin_json", ExportFormat::ZipkinJson),
    ("otlp_json", ExportFormat::OtlpJson),
];

/// Every field with its default; then each object refuses the keys it did not read.
fn read(mut doc: Object<'_>) -> Result<Raw, ConfigError> {
    let d = Raw::default();
    let raw = Raw {
        service_name: doc.nullable_string("service_name")?,
        span_kind: doc.choice("span_kind", &SPAN_KINDS, d.span_kind)?,
        span_shape: doc.choice("span_shape", &SPAN_SHAPES, d.span_shape)?,
        span_ids: doc.choice("span_ids", &SPAN_IDS, d.span_ids)?,
        sampling: read_sampling(doc.object("sampling")?, d.sampling)?,
        propagation: read_propagation(doc.object("propagation")?, d.propagation)?,
        tags: read_tags(doc.object("tags")?, d.tags)?,
        collector: read_collector(doc.object("collector")?, d.collector)?,
    };
    doc.finish()?;
    Ok(raw)
}

fn read_sampling(mut o: Object<'_>, d: Sampling) -> Result<Sampling, ConfigError> {
    let s = Sampling {
        rate: o.f64("rate", d.rate)?,
        override_header: o.string("override_header", &d.override_header)?,
        force_header: o.string("force_header", &d.force_header)?,
        trust_upstream: o.bool("trust_upstream", d.trust_upstream)?,
        trust_debug: o.bool("trust_debug", d.trust_debug)?,
    };
    o.finish()?;
    Ok(s)
}

fn read_propagation(mut o: Object<'_>, d: RawPropagation) -> Result<RawPropagation, ConfigError> {
    let p = RawPropagation {
        extract: o.choices("extract", &FORMATS)?.unwrap_or(d.extract),
        inject: o.choices("inject", &FORMATS)?.unwrap_or(d.inject),
    };
    o.finish()?;
    Ok(p)
}

fn read_tags(mut o: Object<'_>, d: Tags) -> Result<Tags, ConfigError> {
    let t = Tags {
        fixed: o.string_map("static")?.unwrap_or(d.fixed),
        request_headers: o.strings("request_headers")?.unwrap_or(d.request_headers),
        deny_headers: o.strings("deny_headers")?.unwrap_or(d.deny_headers),
        unsafe_record_sensitive_headers: o.bool(
            "unsafe_record_sensitive_headers",
            d.unsafe_record_sensitive_headers,
        )?,
        max_value_length: o.size("max_value_length", d.max_value_length, 1..=65_536)?,
        record_query: o.bool("record_query", d.record_query)?,
    };
    o.finish()?;
    Ok(t)
}

fn read_collector(mut o: Object<'_>, d: Collector) -> Result<Collector, ConfigError> {
    let c = Collector {
        cluster: o.string("cluster", &d.cluster)?,
        authority: o.string("authority", &d.authority)?,
        path: o.string("path", &d.path)?,
        format: o.choice("format", &EXPORT_FORMATS, d.format)?,
        flush_interval_ms: o.u64("flush_interval_ms", d.flush_interval_ms, 10..=600_000)?,
        max_batch: o.size("max_batch", d.max_batch, 1..=10_000)?,
        max_queue: o.size("max_queue", d.max_queue, 1..=100_000)?,
        timeout_ms: o.u64("timeout_ms", d.timeout_ms, 1..=60_000)?,
        max_in_flight: o.size("max_in_flight", d.max_in_flight, 1..=64)?,
        retry: read_retry(o.object("retry")?, d.retry)?,
    };
    o.finish()?;
    Ok(c)
}

fn read_retry(mut o: Object<'_>, d: Retry) -> Result<Retry, ConfigError> {
    let r = Retry {
        max_attempts: o.u64("max_attempts", d.max_attempts, 1..=10)?,
        initial_backoff_ms: o.u64("initial_backoff_ms", d.initial_backoff_ms, 1..=60_000)?,
        max_backoff_ms: o.u64("max_backoff_ms", d.max_backoff_ms, 1..=600_000)?,
    };
    o.finish()?;
    Ok(r)
}

fn check_sampling_and_tags(raw: &Raw) -> Result<(), ConfigError> {
    let s = &raw.sampling;
    if !(0.0..=1.0).contains(&s.rate) {
        return Err(error(
            "sampling.rate",
            &format!("must be within 0.0..=1.0, got {}", shown(s.rate)),
        ));
    }
    check_header_name("sampling.override_header", &s.override_header, true)?;
    check_header_name("sampling.force_header", &s.force_header, true)?;
    check_header_list("tags.deny_headers", &raw.tags.deny_headers)?;
    check_header_list("tags.request_headers", &raw.tags.request_headers)?;
    check_not_denied(&raw.tags)?;
    for key in raw.tags.fixed.keys() {
        if key.is_empty() {
            return Err(error("tags.static", "tag names must not be empty"));
        }
        check_tag_name(&format!("tags.static.{key}"), key)?;
        if raw.tags.request_headers.iter().any(|h| h == key) {
            let reason = format!("{} is also in tags.request_headers", quoted(key));
            return Err(error(&format!("tags.static.{key}"), &reason));
        }
    }
    for (i, name) in raw.tags.request_headers.iter().enumerate() {
        check_tag_name(&format!("tags.request_headers[{i}]"), name)?;
    }
    Ok(())
}

fn check_tag_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if crate::span::tag::RESERVED.contains(&name) {
        let reason = format!("{} is a tag meshtrace writes itself", quoted(name));
        return Err(error(path, &reason));
    }
    Ok(())
}

/// Valid header names, each once (names are case-insensitive).
fn check_header_list(key: &str, headers: &[String]) -> Result<(), ConfigError> {
    for (i, name) in headers.iter().enumerate() {
        let path = format!("{key}[{i}]");
        check_header_name(&path, name, false)?;
        if headers[..i].iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return Err(error(&path, &format!("duplicate entry {}", quoted(name))));
        }
    }
    Ok(())
}

/// A credential header in the allowlist is refused, not silently skipped: the operator learns at
/// once that the tag will never appear, and why.
fn check_not_denied(t: &Tags) -> Result<(), ConfigError> {
    if t.unsafe_record_sensitive_headers {
        return Ok(());
    }
    let denied = |h: &str| {
        SENSITIVE_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(h))
            || t.deny_headers.iter().any(|d| d.eq_ignore_ascii_case(h))
    };
    match t.request_headers.iter().position(|h| denied(h)) {
        None => Ok(()),
        Some(i) => Err(error(
            &format!("tags.request_headers[{i}]"),
            &format!(
                "{} is never recorded (it carries credentials or is in tags.deny_headers); \
                 remove it, or set tags.unsafe_record_sensitive_headers: true",
                quoted(&t.request_headers[i])
            ),
        )),
    }
}

fn check_collector(raw: &Raw) -> Result<(), ConfigError> {
    let c = &raw.collector;
    if c.cluster.is_empty() {
        return Err(error("collector.cluster", "must not be empty"));
    }
    if c.authority.is_empty() {
        return Err(error("collector.authority", "must not be empty"));
    }
    if !c.path.is_empty() && !c.path.starts_with('/') {
        return Err(error(
            "collector.path",
            &format!("must start with '/', got {}", quoted(&c.path)),
        ));
    }
    if c.max_queue < c.max_batch {
        return Err(error(
            "collector.max_queue",
            &format!(
                "must be >= collector.max_batch ({}), got {}",
                c.max_batch, c.max_queue
            ),
        ));
    }
    let r = &c.retry;
    if r.max_backoff_ms < r.initial_backoff_ms {
        return Err(error(
            "collector.retry.max_backoff_ms",
            &format!(
                "must be >= collector.retry.initial_backoff_ms ({}), got {}",
                r.initial_backoff_ms, r.max_backoff_ms
            ),
        ));
    }
    if raw.span_ids == SpanIds::Shared && c.format == ExportFormat::OtlpJson {
        return Err(error(
            "span_ids",
            "shared span ids are a Zipkin model; OTLP needs a unique id per span (use child, or collector.format zipkin_json)",
        ));
    }
    Ok(())
}

fn check_propagation(raw: &Raw) -> Result<(), ConfigError> {
    let p = &raw.propagation;
    if p.inject.is_empty() {
        return Err(error("propagation.inject", "must name at least one format"));
    }
    for (key, list) in [("extract", &p.extract), ("inject", &p.inject)] {
        if let Some(i) = (1..list.len()).find(|&i| list[..i].contains(&list[i])) {
            let name = FORMATS
                .iter()
                .find(|(_, f)| *f == list[i])
                .map_or("?", |(n, _)| n);
            return Err(error(
                &format!("propagation.{key}[{i}]"),
                &format!("duplicate entry {}", quoted(name)),
            ));
        }
    }
    Ok(())
}

/// The last `"key":` that starts before line `line`, column `column` (1-based, as serde_json counts).
fn key_before(text: &str, line: usize, column: usize) -> Option<&str> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let end = (line_start + column).min(text.len());
    let before = text.get(..end)?;
    // `get`, not indexing: a slicing panic would bring core's Unicode tables into the module.
    let colon = before.rfind(':')?;
    let key = before.get(..colon)?.trim_end().strip_suffix('"')?;
    let open = key.rfind('"')?;
    key.get(open + 1..)
}

/// The checked document as the filter uses it: header names lower-cased, the format's path.
fn build(raw: Raw) -> Config {
    let mut tags = raw.tags;
    tags.request_headers = tags
        .request_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut collector = raw.collector;
    if collector.path.is_empty() {
        collector.path = collector.format.default_path().to_string();
    }
    let mut sampling = raw.sampling;
    sampling.override_header = sampling.override_header.to_ascii_lowercase();
    sampling.force_header = sampling.force_header.to_ascii_lowercase();
    Config {
        service_name: raw.service_name.filter(|s| !s.is_empty()),
        span_kind: raw.span_kind,
        span_shape: raw.span_shape,
        span_ids: raw.span_ids,
        sampling,
        extract: Formats::of(&raw.propagation.extract),
        inject: Formats::of(&raw.propagation.inject),
        tags,
        collector,
    }
}

/// Header names must be lower-case-able HTTP tokens and never pseudo-headers: a tag or override on
/// `:authority` would read something other than what the operator meant.
fn check_header_name(path: &str, name: &str, empty_ok: bool) -> Result<(), ConfigError> {
    if name.is_empty() {
        return if empty_ok {
            Ok(())
        } else {
            Err(error(path, "must not be empty"))
        };
    }
    let token = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        Ok(())
    } else {
        Err(error(
            path,
            &format!("not a valid HTTP header name: {}", quoted(name)),
        ))
    }
}

/// A string in double quotes, `"` `\\` and control characters escaped: what `{:?}` shows for the
/// configuration's values, without the Unicode tables `{:?}` brings into the module (bench/README.md).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as the JSON document writes it (`0.01`, `1.5`, `1.0`), printed by serde_json's float
/// writer, which the module links anyway, rather than core's second one.
pub fn shown(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| "non-finite".to_string(), |n| n.to_string())
}

fn error(path: &str, reason: &str) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = parse(b"").unwrap_or_default();
        assert_eq!(c.sampling.rate, 0.01);
        assert_eq!(c.collector.cluster, DEFAULT_COLLECTOR_CLUSTER);
        assert!(c.extract.contains(Format::B3Single));
        assert!(!c.inject.contains(Format::B3Single));
        assert_eq!(parse(b"{}"), parse(b"  "));
        assert_eq!(parse(b"{}"), Ok(Config::default()));
        assert_eq!(Config::default().collector.path, "/api/v2/spans");
    }

    #[test]
    fn values_in_messages_are_quoted_and_numbers_shown_as_written() {
        for plain in [
            "",
            "meshtrace",
            "outbound|9411||zipkin.istio-system.svc.cluster.local",
            "é",
        ] {
            assert_eq!(quoted(plain), format!("{plain:?}"));
        }
        assert_eq!(quoted("a\"b\\c\n"), r#""a\"b\\c\u{a}""#);
        for (x, text) in [(0.01, "0.01"), (1.5, "1.5"), (1.0, "1.0"), (-0.1, "-0.1")] {
            assert_eq!(shown(x), text);
        }
        assert_eq!(shown(f64::NAN), "non-finite");
    }

    #[test]
    fn valid_rows() {
        let rows: &[(&str, &str)] = &[
            ("empty object", "{}"),
            ("rate bounds", r#"{"sampling": {"rate": 0}}"#),
            ("rate one int", r#"{"sampling": {"rate": 1}}"#),
            (
                "override header",
                r#"{"sampling": {"override_header": "L5d-Sample"}}"#,
            ),
            ("no force header", r#"{"sampling": {"force_header": ""}}"#),
            (
                "formats",
                r#"{"propagation": {"extract": ["b3_single"], "inject": ["b3_multi", "b3_single"]}}"#,
            ),
            (
                "tags",
                r#"{"tags": {"static": {"env": "prod"}, "request_headers": ["x-tenant"], "max_value_length": 8}}"#,
            ),
            (
                "collector",
                r#"{"collector": {"cluster": "zipkin", "max_batch": 5, "max_queue": 5, "format": "zipkin_json"}}"#,
            ),
            ("kind", r#"{"span_kind": "client", "service_name": "svc"}"#),
            (
                "w3c",
                r#"{"propagation": {"extract": ["w3c", "b3_multi"], "inject": ["w3c"]}}"#,
            ),
            (
                "span shape",
                r#"{"span_shape": "server_client", "span_ids": "shared"}"#,
            ),
            ("otlp", r#"{"collector": {"format": "otlp_json"}}"#),
            (
                "credentials recorded on purpose",
                r#"{"tags": {"request_headers": ["authorization", "proxy-authorization", "cookie", "set-cookie"], "unsafe_record_sensitive_headers": true}}"#,
            ),
        ];
        for (name, input) in rows {
            assert!(
                parse(input.as_bytes()).is_ok(),
                "row {name}: {:?}",
                parse(input.as_bytes())
            );
        }
        let c = parse(br#"{"sampling": {"override_header": "L5d-Sample"}}"#).unwrap_or_default();
        assert_eq!(c.sampling.override_header, "l5d-sample");
        let path = |json: &str| parse(json.as_bytes()).map(|c| c.collector.path);
        assert_eq!(path("{}"), Ok("/api/v2/spans".to_string()));
        assert_eq!(
            path(r#"{"collector": {"format": "otlp_json"}}"#),
            Ok("/v1/traces".to_string())
        );
        assert_eq!(
            path(r#"{"collector": {"format": "otlp_json", "path": "/otlp/v1/traces"}}"#),
            Ok("/otlp/v1/traces".to_string())
        );
    }

    #[test]
    fn invalid_rows() {
        let rows: &[(&str, &str, &str, &str)] = &[
            (
                "unknown top key",
                r#"{"sample_rate": 1}"#,
                "sample_rate",
                "unknown field `sample_rate`",
            ),
            (
                "unknown nested key",
                r#"{"sampling": {"rat": 1}}"#,
                "sampling.rat",
                "unknown field `rat`",
            ),
            (
                "wrong type",
                r#"{"sampling": {"rate": "1"}}"#,
                "sampling.rate",
                "invalid type: string",
            ),
            (
                "rate too big",
                r#"{"sampling": {"rate": 1.5}}"#,
                "sampling.rate",
                "must be within 0.0..=1.0, got 1.5",
            ),
            (
                "rate negative",
                r#"{"sampling": {"rate": -0.1}}"#,
                "sampling.rate",
                "must be within",
            ),
            (
                "bad format",
                r#"{"collector": {"format": "otlp"}}"#,
                "collector.format",
                "unknown variant `otlp`",
            ),
            (
                "bad propagation",
                r#"{"propagation": {"inject": ["traceparent"]}}"#,
                "propagation.inject[0]",
                "unknown variant `traceparent`",
            ),
            (
                "bad span shape",
                r#"{"span_shape": "pair"}"#,
                "span_shape",
                "unknown variant `pair`",
            ),
            (
                "bad span ids",
                r#"{"span_ids": "same"}"#,
                "span_ids",
                "unknown variant `same`",
            ),
            (
                "shared ids with OTLP",
                r#"{"span_ids": "shared", "collector": {"format": "otlp_json"}}"#,
                "span_ids",
                "OTLP needs a unique id per span",
            ),
            (
                "no inject",
                r#"{"propagation": {"inject": []}}"#,
                "propagation.inject",
                "at least one",
            ),
            (
                "queue below batch",
                r#"{"collector": {"max_batch": 10, "max_queue": 5}}"#,
                "collector.max_queue",
                "must be >= collector.max_batch",
            ),
            (
                "static tag named like a built-in",
                r#"{"tags": {"static": {"error": "x"}}}"#,
                "tags.static.error",
                "\"error\" is a tag meshtrace writes itself",
            ),
            (
                "header tag named like a built-in",
                r#"{"tags": {"request_headers": ["user_agent"]}}"#,
                "tags.request_headers[0]",
                "a tag meshtrace writes itself",
            ),
            (
                "static tag and header tag of one name",
                r#"{"tags": {"static": {"x-tenant": "a"}, "request_headers": ["x-tenant"]}}"#,
                "tags.static.x-tenant",
                "also in tags.request_headers",
            ),
            (
                "zero attempts",
                r#"{"collector": {"retry": {"max_attempts": 0}}}"#,
                "collector.retry.max_attempts",
                "must be within 1..=10",
            ),
            (
                "backoff cap below start",
                r#"{"collector": {"retry": {"initial_backoff_ms": 2000, "max_backoff_ms": 1000}}}"#,
                "collector.retry.max_backoff_ms",
                "must be >= collector.retry.initial_backoff_ms (2000), got 1000",
            ),
            (
                "unknown retry key",
                r#"{"collector": {"retry": {"attempts": 2}}}"#,
                "collector.retry.attempts",
                "unknown field",
            ),
            (
                "zero batch",
                r#"{"collector": {"max_batch": 0}}"#,
                "collector.max_batch",
                "must be within 1..=10000",
            ),
            (
                "tiny flush",
                r#"{"collector": {"flush_interval_ms": 1}}"#,
                "collector.flush_interval_ms",
                "must be within",
            ),
            (
                "negative timeout",
                r#"{"collector": {"timeout_ms": -5}}"#,
                "collector.timeout_ms",
                "invalid value",
            ),
            (
                "relative path",
                r#"{"collector": {"path": "api/v2/spans"}}"#,
                "collector.path",
                "must start with '/'",
            ),
            (
                "empty cluster",
                r#"{"collector": {"cluster": ""}}"#,
                "collector.cluster",
                "must not be empty",
            ),
            (
                "bad header",
                r#"{"tags": {"request_headers": ["x ok"]}}"#,
                "tags.request_headers[0]",
                "not a valid HTTP header name",
            ),
            (
                "pseudo header",
                r#"{"sampling": {"override_header": ":path"}}"#,
                "sampling.override_header",
                "not a valid",
            ),
            (
                "bad kind",
                r#"{"span_kind": "producer"}"#,
                "span_kind",
                "unknown variant `producer`",
            ),
            ("not an object", "[1]", "(root)", "expected an object"),
            (
                "section not an object",
                r#"{"sampling": [0.5]}"#,
                "sampling",
                "expected an object",
            ),
            (
                "broken json",
                r#"{"sampling": "#,
                "(root)",
                "not valid JSON: EOF",
            ),
            (
                "duplicate header, other case",
                r#"{"tags": {"request_headers": ["x-tenant", "X-Tenant"]}}"#,
                "tags.request_headers[1]",
                "duplicate entry \"X-Tenant\"",
            ),
            (
                "duplicate format",
                r#"{"propagation": {"extract": ["w3c", "b3_multi", "w3c"]}}"#,
                "propagation.extract[2]",
                "duplicate entry \"w3c\"",
            ),
            (
                "beyond f64",
                r#"{"sampling": {"rate": 1e309}}"#,
                "(root)",
                "number out of range at line 1 column 27 (after key \"rate\")",
            ),
            (
                "beyond f64, on a later line",
                "{\n  \"collector\": {\n    \"max_batch\": 1e400}}",
                "(root)",
                "(after key \"max_batch\")",
            ),
            (
                "credential header allowlisted",
                r#"{"tags": {"request_headers": ["x-tenant", "Cookie"]}}"#,
                "tags.request_headers[1]",
                "\"Cookie\" is never recorded",
            ),
            (
                "denied header allowlisted",
                r#"{"tags": {"request_headers": ["x-api-key"], "deny_headers": ["X-Api-Key"]}}"#,
                "tags.request_headers[0]",
                "unsafe_record_sensitive_headers",
            ),
            (
                "bad deny list entry",
                r#"{"tags": {"deny_headers": ["ok", "not ok"]}}"#,
                "tags.deny_headers[1]",
                "not a valid HTTP header name",
            ),
            (
                "float for an integer",
                r#"{"collector": {"max_batch": 1.5}}"#,
                "collector.max_batch",
                "invalid type: floating point `1.5`, expected a non-negative integer",
            ),
            (
                "null for a number",
                r#"{"sampling": {"rate": null}}"#,
                "sampling.rate",
                "invalid type: null, expected f64",
            ),
            (
                "number for a string",
                r#"{"collector": {"cluster": 5}}"#,
                "collector.cluster",
                "invalid type: integer `5`, expected a string",
            ),
            (
                "object for a list",
                r#"{"tags": {"request_headers": {"a": 1}}}"#,
                "tags.request_headers",
                "invalid type: map, expected a sequence",
            ),
            (
                "absurd queue",
                r#"{"collector": {"max_queue": 10000000000}}"#,
                "collector.max_queue",
                "must be within 1..=100000, got 10000000000",
            ),
            (
                "static tag not string",
                r#"{"tags": {"static": {"a": 1}}}"#,
                "tags.static.a",
                "invalid type: integer",
            ),
        ];
        for (name, input, path, reason) in rows {
            match parse(input.as_bytes()) {
                Ok(_) => unreachable!("row {name}: accepted"),
                Err(e) => {
                    assert_eq!(e.path, *path, "row {name}: {e}");
                    assert!(e.reason.contains(reason), "row {name}: {e}");
                }
            }
        }
    }
}
