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

    /// One-line summary used in trace trees: service, name, kind, duration, then the exporting
    /// Envoy (when it differs from the service), id, debug flag and key tags.
    pub fn summary(&self) -> String {
        self.summary_with_bar(None)
    }

    fn summary_with_bar(&self, bar: Option<String>) -> String {
        let service = self.field("serviceName").unwrap_or_else(|| "?".into());
        let mut s = format!(
            "{service}  {}  {}  {}",
            self.field("name").unwrap_or_default(),
            self.field("kind").unwrap_or_else(|| "?".into()),
            format_duration(self.duration_us()),
        );
        if let Some(b) = bar {
            s.push_str("  ");
            s.push_str(&b);
        }
        if self.envoy != service {
            s.push_str(&format!("  [envoy {}]", self.envoy));
        }
        s.push_str(&format!(" id={}", self.id()));
        if self.field("debug").as_deref() == Some("true") {
            s.push_str(" DEBUG");
        }
        let tags = self.tags();
        for k in [
            "http.status_code",
            "http.response.status_code",
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

/// `762 µs`, `12.3 ms`, `1.20 s`.
pub fn format_duration(us: Option<u64>) -> String {
    match us {
        None => "? µs".to_string(),
        Some(d) if d < 1000 => format!("{d} µs"),
        Some(d) if d < 1_000_000 => format!("{:.1} ms", d as f64 / 1000.0),
        Some(d) => format!("{:.2} s", d as f64 / 1e6),
    }
}

/// Width of the duration bars in trace trees.
const BAR_WIDTH: u64 = 10;

/// A bar of `BAR_WIDTH` cells for a span within its root span's time range: the cells the span
/// covers are `█`, the rest `░` (so a child's bar sits inside its parent's).
pub fn duration_bar(root: (u64, u64), span: (u64, u64)) -> String {
    let (rs, rd) = root;
    let (ss, sd) = span;
    let rd = rd.max(1);
    let cell = |t: u64| {
        (t.saturating_sub(rs) * BAR_WIDTH)
            .div_ceil(rd)
            .min(BAR_WIDTH)
    };
    let from = (ss.saturating_sub(rs) * BAR_WIDTH / rd).min(BAR_WIDTH - 1);
    let to = cell(ss.saturating_add(sd)).max(from + 1);
    (0..BAR_WIDTH)
        .map(|i| if i >= from && i < to { '█' } else { '░' })
        .collect()
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
            let root = (
                r.timestamp_us().unwrap_or_default(),
                r.duration_us().unwrap_or_default(),
            );
            let ctx = Render {
                children: &children,
                root,
            };
            render_node(r, &ctx, "", i + 1 == n, &mut seen, &mut out);
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

struct Render<'a, 'b> {
    children: &'a HashMap<String, Vec<&'b Span>>,
    /// (start, duration) of the tree's root span: bars are scaled to it.
    root: (u64, u64),
}

fn render_node(
    s: &Span,
    ctx: &Render,
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
    let bar = match (s.timestamp_us(), s.duration_us()) {
        (Some(ts), Some(d)) => Some(duration_bar(ctx.root, (ts, d))),
        _ => None,
    };
    out.push_str(&format!(
        "{prefix}{branch}{}{orphan}\n",
        s.summary_with_bar(bar)
    ));
    let kids = ctx.children.get(&s.id()).cloned().unwrap_or_default();
    let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
    let n = kids.len();
    for (i, k) in kids.into_iter().enumerate() {
        render_node(k, ctx, &child_prefix, i + 1 == n, seen, out);
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
        assert_eq!(
            lines[3],
            "└─ gateway  GET /  SERVER  1.5 ms  ██████████  [envoy gw] id=000000000000000a \
             http.status_code=200 sampling.reason=rate"
        );
        assert!(lines[4].starts_with("   ├─ app") && lines[4].contains("id=000000000000000b"));
        assert!(lines[5].starts_with("   │  └─ db"), "{}", lines[5]);
        assert!(lines[6].starts_with("   └─ app") && lines[6].contains("id=000000000000000c"));
        assert!(
            lines[4].contains("  ██████████  [envoy gw]"),
            "{}",
            lines[4]
        );
        assert!(lines[3].contains("http.status_code=200 sampling.reason=rate"));
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn bars_and_durations() {
        assert_eq!(duration_bar((100, 1000), (100, 1000)), "██████████");
        assert_eq!(duration_bar((100, 1000), (600, 500)), "░░░░░█████");
        assert_eq!(duration_bar((100, 1000), (100, 10)), "█░░░░░░░░░");
        assert_eq!(duration_bar((100, 1000), (2000, 10)), "░░░░░░░░░█");
        assert_eq!(duration_bar((0, 0), (0, 0)), "█░░░░░░░░░");
        assert_eq!(format_duration(Some(762)), "762 µs");
        assert_eq!(format_duration(Some(12_345)), "12.3 ms");
        assert_eq!(format_duration(Some(1_200_000)), "1.20 s");
        let mut s = span("0000000000000001", "000000000000000a", None, 1, "svc");
        s.envoy = "svc".into();
        assert!(s.summary().starts_with("svc  GET /  SERVER  1.5 ms id="));
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
