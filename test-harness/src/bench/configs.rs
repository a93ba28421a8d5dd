//! The Envoy configurations the bench compares. One Envoy per configuration, all with the same
//! binary, listener and routes; they differ only in the HTTP filter before the router or the
//! connection manager's native tracer. Every tracer reports to the same sink.

use std::path::{Path, PathBuf};

/// What runs in front of the router.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// Router only.
    None,
    /// A proxy-wasm module with no configuration (the bench's empty filter and propagation floor).
    Wasm { module: String },
    /// meshtrace at a sampling rate (0.0..=1.0); `module`: another build than the default.
    Meshtrace { rate: f64, module: Option<String> },
    /// Envoy's Zipkin tracer at a percentage, with `tracing.zipkin.min_flush_spans`.
    Zipkin { percent: f64, min_flush_spans: u32 },
    /// Envoy's OpenTelemetry tracer (OTLP/HTTP) at a percentage.
    Otel { percent: f64 },
}

/// One configuration of the comparison.
#[derive(Debug, Clone)]
pub struct Config {
    /// Short stable name (tables, JSON, chart).
    pub name: String,
    pub variant: Variant,
}

/// Every configuration the issue asks for, in table order; `empty`/`floor` are module paths;
/// each `alt` (name, module) adds meshtrace at 1% and 100% from that module, named `…@name`.
pub fn all(empty: &Path, floor: &Path, alt: &[(String, PathBuf)]) -> Vec<Config> {
    let c = |name: &str, variant| Config {
        name: name.into(),
        variant,
    };
    vec![
        c("none", Variant::None),
        c(
            "empty-filter",
            Variant::Wasm {
                module: empty.display().to_string(),
            },
        ),
        c(
            "propagation-floor",
            Variant::Wasm {
                module: floor.display().to_string(),
            },
        ),
        c("meshtrace-0", meshtrace(0.0)),
        c("meshtrace-1%", meshtrace(0.01)),
        c("meshtrace-100%", meshtrace(1.0)),
        c(
            "zipkin-1%",
            Variant::Zipkin {
                percent: 1.0,
                min_flush_spans: 5,
            },
        ),
        c(
            "zipkin-100%",
            Variant::Zipkin {
                percent: 100.0,
                min_flush_spans: 5,
            },
        ),
        c(
            "zipkin-100%-flush100",
            Variant::Zipkin {
                percent: 100.0,
                min_flush_spans: 100,
            },
        ),
        c("otel-100%", Variant::Otel { percent: 100.0 }),
    ]
    .into_iter()
    .chain(alt.iter().flat_map(|(name, path)| {
        [(0.01, "1%"), (1.0, "100%")].map(|(rate, label)| Config {
            name: format!("meshtrace-{label}@{name}"),
            variant: Variant::Meshtrace {
                rate,
                module: Some(path.display().to_string()),
            },
        })
    }))
    .collect()
}

fn meshtrace(rate: f64) -> Variant {
    Variant::Meshtrace { rate, module: None }
}

/// The two routes every configuration serves.
pub const DIRECT: &str = "/direct";
pub const UPSTREAM: &str = "/upstream";

fn wasm_filter(module: &str, configuration: &str) -> String {
    format!(
        r#"
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                root_id: ""
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{configuration}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{module}"}}}}"#
    )
}

fn tracing(v: &Variant) -> String {
    let (percent, provider) = match v {
        Variant::Zipkin { percent, .. } => (
            percent,
            r#"name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: sink
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                shared_span_context: false"#,
        ),
        Variant::Otel { percent } => (
            percent,
            r#"name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: bench
                http_service:
                  http_uri: {uri: "http://sink/v1/traces", cluster: sink, timeout: 5s}"#,
        ),
        _ => return String::new(),
    };
    format!(
        r#"
          tracing:
            random_sampling: {{value: {percent}}}
            provider:
              {provider}"#
    )
}

/// The Envoy YAML of `cfg`: listener on `port`, admin on `admin`, the upstream route and every
/// tracer's collector both at the sink `127.0.0.1:sink`.
pub fn envoy_yaml(cfg: &Config, meshtrace: &Path, port: u16, admin: u16, sink: u16) -> String {
    let filter = match &cfg.variant {
        Variant::Wasm { module } => wasm_filter(module, ""),
        Variant::Meshtrace { rate, module } => wasm_filter(
            &module
                .clone()
                .unwrap_or_else(|| meshtrace.display().to_string()),
            &format!(
                r#"{{"sampling": {{"rate": {rate}}}, "collector": {{"cluster": "sink", "authority": "sink", "path": "/api/v2/spans"}}}}"#
            ),
        ),
        _ => String::new(),
    };
    let min_flush = match cfg.variant {
        Variant::Zipkin {
            min_flush_spans, ..
        } => min_flush_spans,
        _ => 5,
    };
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
layered_runtime:
  layers:
  - name: static
    static_layer:
      tracing.zipkin.min_flush_spans: {min_flush}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench{tracing}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "{UPSTREAM}"}}
                route: {{cluster: sink}}
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "ok"}}}}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: sink
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sink
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {sink}}}}}}}
"#,
        tracing = tracing(&cfg.variant),
    )
}

/// The sink: the upstream of `/upstream` (200 "ok") and every tracer's collector (202 to
/// `/api/v2/spans` and `/v1/traces`), a direct response each, so that it costs the measured
/// Envoy nothing but the calls themselves.
pub fn sink_yaml(port: u16, admin: u16) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: sink
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sink
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/api/v2/spans"}}
                direct_response: {{status: 202}}
              - match: {{prefix: "/v1/traces"}}
                direct_response: {{status: 200, body: {{inline_string: "{{}}"}}}}
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "ok"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}
