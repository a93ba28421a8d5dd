//! What a run observed, as the expectations read it: the requests the apps and the fake collector
//! received, and the spans instrumented apps reported.

use crate::model::scenario::CollectorFault;

/// One request as an upstream or the collector saw it.
#[derive(Debug, Clone, Default)]
pub struct RecordedRequest {
    pub method: String,
    /// Path including the query string.
    pub path: String,
    /// Lower-cased header names, arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Result of the call to the next hop (`next:`), if any.
    pub next_result: Option<String>,
    /// The SERVER span an instrumented app (`report_span`) reported for this request (None: not
    /// instrumented, or the incoming context was not sampled).
    pub report: Option<AppReport>,
}

/// A span an instrumented app reported to the real collector.
#[derive(Debug, Clone)]
pub struct AppReport {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    /// The collector's HTTP status, or the transport error.
    pub status: Result<u16, String>,
}

impl RecordedRequest {
    /// The header's value; several occurrences are joined with ",". The pseudo-headers `:path`
    /// (path and query) and `:method` read the request line.
    pub fn header(&self, name: &str) -> Option<String> {
        match name {
            ":path" => return Some(self.path.clone()),
            ":method" => return Some(self.method.clone()),
            _ => {}
        }
        let name = name.to_ascii_lowercase();
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(","))
        }
    }

    /// True when the request carries a sampled (or debug) B3 decision.
    pub fn sampled(&self) -> bool {
        self.header("x-b3-sampled").as_deref() == Some("1")
            || self.header("x-b3-flags").as_deref() == Some("1")
    }
}

/// One POST (or other request) the collector received.
#[derive(Debug, Clone)]
pub struct ExportPost {
    /// The Envoy whose `zipkin` cluster points at the endpoint that received it.
    pub envoy: String,
    pub request: RecordedRequest,
    /// The parsed span array, or why it could not be parsed.
    pub spans: Result<Vec<serde_json::Value>, String>,
    /// How the collector failed this export instead of answering it (`collector.fault`).
    pub fault: Option<CollectorFault>,
    /// The status the collector answers (or, with a `fault`, puts in its broken answer; 0 for a
    /// black hole).
    pub status: u16,
    /// The `Retry-After` value of the answer, if it has one.
    pub retry_after: Option<String>,
    /// The collector failed this export on purpose: a `fault`, or a `fault_status` answer.
    pub faulted: bool,
    /// When the request had been read whole (ms on the collector's clock, see [`Timeline`]).
    pub received_ms: u64,
    /// When a complete status answer had been written (None: no complete answer, e.g. a fault,
    /// or Envoy had given up on the call before the answer was ready).
    pub answered_ms: Option<u64>,
}

impl ExportPost {
    /// The collector acknowledged the export: a complete 2xx answer written to a connection
    /// Envoy still held open. Only these spans may count as exported.
    pub fn acknowledged(&self) -> bool {
        self.answered_ms.is_some() && (200..300).contains(&self.status)
    }

    /// Spans in the post (0 when the body did not parse).
    pub fn span_count(&self) -> u64 {
        self.spans.as_ref().map_or(0, Vec::len) as u64
    }
}

/// When the fake collector went down and came back, and when the requests were sent, in ms on
/// the collector's own clock (from its creation).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// (when, up): each change of `collector.outages`/`flap`, as applied.
    pub changes: Vec<(u64, bool)>,
    /// When the first request was about to be sent and when the last one had completed.
    pub requests: Option<(u64, u64)>,
    /// Changes that could not be applied (a socket that would not listen again).
    pub problems: Vec<String>,
}
