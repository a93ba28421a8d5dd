//! The span model shared by every encoder.

use std::borrow::Cow;

use crate::ids::{SpanId, TraceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

impl Kind {
    /// Envoy's `xds.listener_direction`: 1 inbound, 2 outbound, 0 unspecified (gateways).
    pub fn from_listener_direction(direction: Option<u64>) -> Kind {
        match direction {
            Some(2) => Kind::Client,
            _ => Kind::Server,
        }
    }

    pub fn as_zipkin(self) -> &'static str {
        match self {
            Kind::Server => "SERVER",
            Kind::Client => "CLIENT",
        }
    }
}

/// One finished span, in the terms of the proxy rather than of any wire format: each encoder
/// (Zipkin v2, OTLP) names these facts its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: TraceId,
    pub id: SpanId,
    pub parent_id: Option<SpanId>,
    pub kind: Kind,
    /// Zipkin's `shared`: this SERVER span reuses the caller's CLIENT span id.
    pub shared: bool,
    pub name: String,
    pub service_name: String,
    pub node_id: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub debug: bool,
    pub http: Http,
    /// The other side of this span: the downstream peer for SERVER spans, the upstream host for
    /// CLIENT spans (`ip:port`).
    pub remote: Option<std::net::SocketAddr>,
    pub error: bool,
    /// Tags every format carries under the same name: sampling reason, invalid context, the
    /// operator's static tags and allowlisted request headers (`header` is true for those).
    pub extra: Vec<Extra>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub key: Cow<'static, str>,
    pub value: String,
    pub header: bool,
}

/// What the proxy saw of the HTTP exchange. Values are already capped at `tags.max_value_length`
/// and the query already redacted unless `tags.record_query`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Http {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    /// Path with the query (`?<redacted>` unless kept).
    pub target: String,
    pub url: String,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub protocol: Option<String>,
    /// 0 when no response was sent (reset, no upstream).
    pub status: u64,
    pub grpc_status: Option<u64>,
    pub response_flags: u64,
    pub request_size: Option<u64>,
    pub response_size: Option<u64>,
    /// Downstream peer IP (Envoy's text as given when it is not `ip:port`); the port is in `remote`.
    pub peer: Option<String>,
    pub upstream_cluster: Option<String>,
    pub upstream_address: Option<String>,
}

impl Span {
    pub fn timestamp_us(&self) -> u64 {
        self.start_ns / 1_000
    }

    pub fn duration_us(&self) -> u64 {
        self.duration_ns / 1_000
    }
}

pub mod tag {
    pub const NODE_ID: &str = "node_id";
    pub const COMPONENT: &str = "component";
    pub const HTTP_URL: &str = "http.url";
    pub const HTTP_METHOD: &str = "http.method";
    pub const HTTP_PROTOCOL: &str = "http.protocol";
    pub const HTTP_STATUS_CODE: &str = "http.status_code";
    pub const ERROR: &str = "error";
    pub const PEER_ADDRESS: &str = "peer.address";
    pub const UPSTREAM_CLUSTER: &str = "upstream_cluster";
    pub const UPSTREAM_ADDRESS: &str = "upstream_address";
    pub const RESPONSE_FLAGS: &str = "response_flags";
    pub const REQUEST_SIZE: &str = "request_size";
    pub const RESPONSE_SIZE: &str = "response_size";
    pub const USER_AGENT: &str = "user_agent";
    pub const REQUEST_ID: &str = "guid:x-request-id";
    pub const SAMPLING_REASON: &str = "sampling.reason";
    pub const INVALID_CONTEXT: &str = "meshtrace.invalid_context";
    pub const GRPC_STATUS: &str = "grpc.status_code";

    /// Names the encoders write themselves (Zipkin tags, OTLP attributes): an operator's tag of the
    /// same name would appear twice in one span, and which one a collector keeps is undefined.
    pub const RESERVED: [&str; 41] = [
        NODE_ID,
        COMPONENT,
        HTTP_URL,
        HTTP_METHOD,
        HTTP_PROTOCOL,
        HTTP_STATUS_CODE,
        ERROR,
        PEER_ADDRESS,
        UPSTREAM_CLUSTER,
        UPSTREAM_ADDRESS,
        RESPONSE_FLAGS,
        REQUEST_SIZE,
        RESPONSE_SIZE,
        USER_AGENT,
        REQUEST_ID,
        SAMPLING_REASON,
        INVALID_CONTEXT,
        GRPC_STATUS,
        "meshtrace.debug",
        "envoy.response_flags",
        "envoy.upstream_address",
        "envoy.upstream_cluster",
        "error.type",
        "http.request.body.size",
        "http.request.method",
        "http.response.body.size",
        "http.response.status_code",
        "network.peer.address",
        "network.peer.port",
        "network.protocol.name",
        "network.protocol.version",
        "rpc.grpc.status_code",
        "server.address",
        "server.port",
        "url.full",
        "url.path",
        "url.query",
        "url.scheme",
        "user_agent.original",
        "service.name",
        "service.instance.id",
    ];
}

/// Envoy's legacy response-flag bit order (`StreamInfo::legacyResponseFlags`, what the
/// `response.flags` property carries) and the short codes its access logs and Zipkin tracer print.
const RESPONSE_FLAG_CODES: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

/// Renders a response-flag bit set as Envoy does: comma-separated codes, `-` when none.
pub fn response_flags(bits: u64) -> String {
    let codes: Vec<&str> = RESPONSE_FLAG_CODES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1u64 << i) != 0)
        .map(|(_, code)| *code)
        .collect();
    if codes.is_empty() {
        "-".to_string()
    } else {
        codes.join(",")
    }
}

/// Cuts `value` to at most `max` bytes on a character boundary.
pub fn truncate(mut value: String, max: usize) -> String {
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// The request target with the query replaced unless the operator asked to keep it: query strings
/// carry tokens and personal data.
pub fn target(path: &str, record_query: bool) -> String {
    match path.find('?') {
        Some(i) if !record_query => format!("{}?<redacted>", &path[..i]),
        _ => path.to_string(),
    }
}

/// `http.url` as Envoy builds it, from a [`target`].
pub fn url(scheme: &str, authority: &str, target: &str) -> String {
    format!("{scheme}://{authority}{target}")
}

/// The span name: the route's decorator if Envoy passed one, else authority + path without query.
pub fn name(decorator: Option<&str>, authority: &str, path: &str) -> String {
    if let Some(d) = decorator.filter(|d| !d.is_empty()) {
        return d.to_string();
    }
    let path = path.split('?').next().unwrap_or(path);
    format!("{authority}{path}")
}

/// A span with every field set, shared by the encoders' golden tests.
#[cfg(test)]
pub(crate) fn fixture() -> Span {
    Span {
        trace_id: TraceId {
            high: 0x463a_c35c_9f64_13ad,
            low: 0x4848_5a39_53bb_6124,
            wide: true,
        },
        id: SpanId(0xe457_b5a2_e4d8_6bd1),
        parent_id: Some(SpanId(0x05e3_ac9a_4f6e_3b90)),
        kind: Kind::Server,
        shared: false,
        name: "example.com/hello".into(),
        service_name: "gateway".into(),
        node_id: "router~10.1.0.1~gw".into(),
        start_ns: 1_700_000_000_000_000_000,
        duration_ns: 1_234_567,
        debug: false,
        http: Http {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "example.com".into(),
            target: "/hello?<redacted>".into(),
            url: "http://example.com/hello?<redacted>".into(),
            user_agent: Some("curl \"quoted\"\n\u{1}".into()),
            request_id: Some("r-1".into()),
            protocol: Some("HTTP/1.1".into()),
            status: 503,
            grpc_status: None,
            response_flags: 1 << 5,
            request_size: None,
            response_size: Some(91),
            peer: Some("10.1.2.3".into()),
            upstream_cluster: Some("app".into()),
            upstream_address: None,
        },
        remote: "10.1.2.3:51000".parse().ok(),
        error: true,
        extra: vec![
            Extra {
                key: Cow::Borrowed(tag::SAMPLING_REASON),
                value: "rate".into(),
                header: false,
            },
            Extra {
                key: Cow::Borrowed("x-tenant"),
                value: "acme".into(),
                header: true,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_flag_rows() {
        let rows: &[(&str, u64, &str)] = &[
            ("none", 0, "-"),
            ("upstream connection failure", 1 << 5, "UF"),
            ("no healthy upstream", 1 << 1, "UH"),
            ("UF and retry limit", (1 << 5) | (1 << 15), "UF,URX"),
            ("unknown high bit ignored", 1 << 40, "-"),
        ];
        for (name, bits, want) in rows {
            assert_eq!(response_flags(*bits), *want, "row {name}");
        }
    }

    #[test]
    fn url_rows() {
        let rows: &[(&str, &str, bool, &str)] = &[
            ("plain", "/a/b", false, "http://h/a/b"),
            ("redacted", "/a?token=x", false, "http://h/a?<redacted>"),
            ("kept", "/a?token=x", true, "http://h/a?token=x"),
            ("empty query", "/a?", false, "http://h/a?<redacted>"),
        ];
        for (name, path, keep, want) in rows {
            assert_eq!(url("http", "h", &target(path, *keep)), *want, "row {name}");
        }
    }

    #[test]
    fn truncate_rows() {
        assert_eq!(truncate("abcdef".into(), 3), "abc");
        assert_eq!(truncate("ab".into(), 3), "ab");
        assert_eq!(truncate("aé".into(), 2), "a");
    }

    #[test]
    fn name_rows() {
        assert_eq!(name(None, "example.com", "/x?q=1"), "example.com/x");
        assert_eq!(name(Some("getTime"), "example.com", "/x"), "getTime");
        assert_eq!(name(Some(""), "h", "/"), "h/");
    }
}
