//! Collected Zipkin v2 spans: field access, built-in sanity checks and trace-tree rendering.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A span as the collector received it, plus the Envoy that exported it.
#[derive(Debug, Clone)]
pub struct Span {
    pub envoy: String,
    pub raw: Value,
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

fn json_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

impl Span {
    pub fn new(envoy: &str, raw: Value) -> Span {
        Span {
            envoy: envoy.to_string(),
            raw,
        }
    }

    /// A top-level field as a string (`serviceName` reads `localEndpoint.serviceName`, `envoy`
    /// the exporting Envoy's scenario name).
    pub fn field(&self, name: &str) -> Option<String> {
        match name {
            "serviceName" => self
                .raw
                .get("localEndpoint")
                .and_then(|l| l.get("serviceName"))
                .and_then(json_string),
            "envoy" => Some(self.envoy.clone()),
            _ => self.raw.get(name).and_then(json_string),
        }
    }

    /// A field by dotted path (`remoteEndpoint.port`), as a string.
    pub fn path(&self, dotted: &str) -> Option<String> {
        let mut cur = &self.raw;
        for part in dotted.split('.') {
            cur = match cur {
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                other => other.get(part)?,
            };
        }
        json_string(cur)
    }

    pub fn tag(&self, k: &str) -> Option<String> {
        self.raw
            .get("tags")
            .and_then(|t| t.get(k))
            .and_then(json_string)
    }

    pub fn tags(&self) -> BTreeMap<String, String> {
        self.raw
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), json_string(v).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn trace_id(&self) -> String {
        self.field("traceId").unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.field("id").unwrap_or_default()
    }

    pub fn parent_id(&self) -> Option<String> {
        self.field("parentId")
    }

    pub fn duration_us(&self) -> Option<u64> {
        self.raw.get("duration").and_then(Value::as_u64)
    }

    pub fn timestamp_us(&self) -> Option<u64> {
        self.raw.get("timestamp").and_then(Value::as_u64)
    }

    /// Problems with the span's basic shape (always checked).
    pub fn shape_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        match self.raw.get("traceId").and_then(Value::as_str) {
            Some(t) if (t.len() == 16 || t.len() == 32) && hex(t) => {}
            other => p.push(format!("traceId must be 16/32 lower-hex, got {other:?}")),
        }
        match self.raw.get("id").and_then(Value::as_str) {
            Some(t) if t.len() == 16 && hex(t) => {}
            other => p.push(format!("id must be 16 lower-hex, got {other:?}")),
        }
        match self.raw.get("parentId") {
            None => {}
            Some(Value::String(t)) if t.len() == 16 && hex(t) => {}
            Some(other) => p.push(format!("parentId must be 16 lower-hex, got {other}")),
        }
        if self.duration_us() == Some(0) {
            p.push("duration must be >= 1µs, got 0".to_string());
        }
        for f in ["timestamp", "duration"] {
            if self.raw.get(f).and_then(Value::as_u64).is_none() {
                p.push(format!(
                    "{f} must be a non-negative integer, got {}",
                    self.raw
                        .get(f)
                        .map_or("absent".to_string(), |v| v.to_string())
                ));
            }
        }
        match self.raw.get("kind").and_then(Value::as_str) {
            Some("SERVER") | Some("CLIENT") => {}
            other => p.push(format!("kind must be SERVER or CLIENT, got {other:?}")),
        }
        if let Some(tags) = self.raw.get("tags") {
            match tags.as_object() {
                Some(m) => {
                    for (k, v) in m {
                        if !v.is_string() {
                            p.push(format!("tag {k} must be a string, got {v}"));
                        }
                    }
                }
                None => p.push(format!("tags must be an object, got {tags}")),
            }
        }
        p
    }

    /// One-line summary used in trace trees.
    pub fn summary(&self) -> String {
        let dur = match self.duration_us() {
            Some(d) if d >= 10_000 => format!("{:.1}ms", d as f64 / 1000.0),
            Some(d) => format!("{d}µs"),
            None => "?µs".to_string(),
        };
        let mut s = format!(
            "{} {:?} {} {} [envoy {}] id={}",
            self.field("serviceName").unwrap_or_else(|| "?".into()),
            self.field("name").unwrap_or_default(),
            self.field("kind").unwrap_or_else(|| "?".into()),
            dur,
            self.envoy,
            self.id()
        );
        if self.field("debug").as_deref() == Some("true") {
            s.push_str(" DEBUG");
        }
        let tags = self.tags();
        for k in [
            "http.status_code",
            "sampling.reason",
            "error",
            "response_flags",
            "http.url",
        ] {
            if let Some(v) = tags.get(k) {
                s.push_str(&format!(" {k}={}", truncate(v, 60)));
            }
        }
        s
    }
}

/// Renders spans as one indented tree per trace (traces ordered by first timestamp, children by
/// timestamp). Spans whose parent was not collected are shown as roots marked "parent … not
/// collected".
pub fn render_traces(spans: &[Span]) -> String {
    let mut by_trace: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(s.trace_id()).or_default().push(s);
    }
    let mut traces: Vec<(String, Vec<&Span>)> = by_trace.into_iter().collect();
    traces.sort_by_key(|(_, v)| v.iter().filter_map(|s| s.timestamp_us()).min());
    let mut out = String::new();
    for (tid, mut members) in traces {
        members.sort_by_key(|s| s.timestamp_us());
        out.push_str(&format!(
            "trace {tid} ({} span{})\n",
            members.len(),
            plural(members.len())
        ));
        let ids: HashSet<String> = members.iter().map(|s| s.id()).collect();
        let mut children: HashMap<String, Vec<&Span>> = HashMap::new();
        let mut roots = Vec::new();
        for s in &members {
            match s.parent_id() {
                Some(p) if ids.contains(&p) && p != s.id() => {
                    children.entry(p).or_default().push(s)
                }
                _ => roots.push(*s),
            }
        }
        let mut seen = HashSet::new();
        let n = roots.len();
        for (i, r) in roots.into_iter().enumerate() {
            render_node(r, &children, "", i + 1 == n, &mut seen, &mut out);
        }
        // Anything not reached (cycles through duplicate ids) is listed flat.
        for s in &members {
            if !seen.contains(&(*s as *const Span as usize)) {
                out.push_str(&format!("  ?? {}\n", s.summary()));
            }
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn render_node(
    s: &Span,
    children: &HashMap<String, Vec<&Span>>,
    prefix: &str,
    last: bool,
    seen: &mut HashSet<usize>,
    out: &mut String,
) {
    if !seen.insert(s as *const Span as usize) {
        return;
    }
    let branch = if last { "└─ " } else { "├─ " };
    let orphan = match s.parent_id() {
        Some(p) if prefix.is_empty() => format!(" (parent {p} not collected)"),
        _ => String::new(),
    };
    out.push_str(&format!("{prefix}{branch}{}{orphan}\n", s.summary()));
    let kids = children.get(&s.id()).cloned().unwrap_or_default();
    let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
    let n = kids.len();
    for (i, k) in kids.into_iter().enumerate() {
        render_node(k, children, &child_prefix, i + 1 == n, seen, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(tid: &str, id: &str, parent: Option<&str>, ts: u64, svc: &str) -> Span {
        let mut v = json!({
            "traceId": tid, "id": id, "kind": "SERVER", "name": "GET /",
            "timestamp": ts, "duration": 1500,
            "localEndpoint": {"serviceName": svc},
            "tags": {"http.status_code": "200", "sampling.reason": "rate"}
        });
        if let Some(p) = parent {
            v["parentId"] = json!(p);
        }
        Span::new("gw", v)
    }

    #[test]
    fn renders_nested_tree_and_orphans() {
        let t = "463ac35c9f6413ad48485a3953bb6124";
        let spans = vec![
            span(t, "000000000000000b", Some("000000000000000a"), 20, "app"),
            span(t, "000000000000000a", None, 10, "gateway"),
            span(t, "000000000000000c", Some("000000000000000a"), 30, "app"),
            span(t, "000000000000000d", Some("000000000000000b"), 25, "db"),
            span(
                "0000000000000001",
                "00000000000000e1",
                Some("00000000000000ff"),
                5,
                "lone",
            ),
        ];
        let out = render_traces(&spans);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "trace 0000000000000001 (1 span)");
        assert!(
            lines[1].starts_with("└─ lone")
                && lines[1].contains("(parent 00000000000000ff not collected)")
        );
        assert_eq!(lines[2], format!("trace {t} (4 spans)"));
        assert!(
            lines[3].starts_with("└─ gateway \"GET /\" SERVER 1500µs [envoy gw]"),
            "{}",
            lines[3]
        );
        assert!(lines[4].starts_with("   ├─ app") && lines[4].contains("id=000000000000000b"));
        assert!(lines[5].starts_with("   │  └─ db"), "{}", lines[5]);
        assert!(lines[6].starts_with("   └─ app") && lines[6].contains("id=000000000000000c"));
        assert!(lines[3].contains("http.status_code=200 sampling.reason=rate"));
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn shape_checks() {
        let ok = span("463ac35c9f6413ad", "000000000000000a", None, 1, "s");
        assert!(ok.shape_problems().is_empty());
        let bad = Span::new(
            "gw",
            json!({"traceId": "ABC", "id": "1", "kind": "PRODUCER", "timestamp": 1.5, "tags": {"a": 1}}),
        );
        let p = bad.shape_problems();
        assert_eq!(p.len(), 6, "{p:?}");
        assert_eq!(ok.field("serviceName").as_deref(), Some("s"));
        assert_eq!(ok.field("envoy").as_deref(), Some("gw"));
        assert_eq!(ok.tag("http.status_code").as_deref(), Some("200"));
        assert_eq!(ok.path("localEndpoint.serviceName").as_deref(), Some("s"));
        assert_eq!(ok.path("duration").as_deref(), Some("1500"));
        assert_eq!(ok.path("remoteEndpoint.port"), None);
    }
}
