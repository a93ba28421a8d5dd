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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: TraceId,
    pub id: SpanId,
    pub parent_id: Option<SpanId>,
    pub kind: Kind,
    pub name: String,
    pub service_name: String,
    pub timestamp_us: u64,
    pub duration_us: u64,
    pub debug: bool,
    /// The downstream peer (`ip:port`), for Zipkin's remoteEndpoint.
    pub remote: Option<std::net::SocketAddr>,
    pub tags: Vec<(Cow<'static, str>, String)>,
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

/// `http.url` as Envoy builds it, with the query replaced unless the operator asked to keep it:
/// query strings carry tokens and personal data.
pub fn url(scheme: &str, authority: &str, path: &str, record_query: bool) -> String {
    let path = match path.find('?') {
        Some(i) if !record_query => format!("{}?<redacted>", &path[..i]),
        _ => path.to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

/// The span name: the route's decorator if Envoy passed one, else authority + path without query.
pub fn name(decorator: Option<&str>, authority: &str, path: &str) -> String {
    if let Some(d) = decorator.filter(|d| !d.is_empty()) {
        return d.to_string();
    }
    let path = path.split('?').next().unwrap_or(path);
    format!("{authority}{path}")
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
            assert_eq!(url("http", "h", path, *keep), *want, "row {name}");
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
