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
    /// The status the collector answers when it does not fail the export.
    pub status: u16,
}
