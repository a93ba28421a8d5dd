//! Normalizes spans from other encodings into the Zipkin v2 JSON shape that [`crate::model::spans::Span`]
//! reads: `{traceId, id, parentId, kind, name, timestamp (µs), duration (µs),
//! localEndpoint: {serviceName}, tags: {k: "v"}}`.
//!
//! Sources: OTLP/HTTP JSON export bodies (what the filter sends with `collector.format:
//! otlp_json`) and Jaeger's v1 query API (`/api/traces`).

use serde_json::{json, Map, Value};

/// A JSON scalar as a tag string (strings unquoted; objects and arrays as JSON text).
pub fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An integer that OTLP JSON may write as a number or as a decimal string.
fn otlp_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An OTLP `AnyValue` (`{stringValue: ..}`, `{intValue: ..}`, …) as a tag string.
fn otlp_any_value(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return stringify(v);
    };
    if let Some((k, inner)) = m.iter().next() {
        return match k.as_str() {
            "stringValue" | "intValue" | "boolValue" | "doubleValue" => stringify(inner),
            "bytesValue" => stringify(inner),
            _ => inner.to_string(),
        };
    }
    String::new()
}

fn otlp_attributes(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    let k = a.get("key")?.as_str()?.to_string();
                    let val = a.get("value").map(otlp_any_value).unwrap_or_default();
                    Some((k, val))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// OTLP span kind (number, or the enum name) as a Zipkin kind.
fn otlp_kind(v: Option<&Value>) -> Option<&'static str> {
    let n = match v? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => match s.trim_start_matches("SPAN_KIND_") {
            "INTERNAL" => 1,
            "SERVER" => 2,
            "CLIENT" => 3,
            "PRODUCER" => 4,
            "CONSUMER" => 5,
            _ => return None,
        },
        _ => return None,
    };
    match n {
        2 => Some("SERVER"),
        3 => Some("CLIENT"),
        4 => Some("PRODUCER"),
        5 => Some("CONSUMER"),
        _ => None,
    }
}

/// True when `v` looks like an OTLP export body (`{"resourceSpans": [...]}`).
pub fn is_otlp(v: &Value) -> bool {
    v.get("resourceSpans").is_some()
}

/// Every span of an OTLP/HTTP JSON export body, in the Zipkin v2 shape. Timestamps are
/// `startTimeUnixNano / 1000`, durations `(end - start) / 1000`; attributes become tags, and
/// `status.code` 2/1 becomes the tag `otel.status_code: ERROR/OK`.
pub fn otlp_to_zipkin(body: &Value) -> Result<Vec<Value>, String> {
    let rs = body
        .get("resourceSpans")
        .and_then(Value::as_array)
        .ok_or("OTLP body has no resourceSpans list")?;
    let mut out = Vec::new();
    for r in rs {
        let res_attrs = otlp_attributes(r.get("resource").and_then(|x| x.get("attributes")));
        let service = res_attrs
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone());
        for ss in r
            .get("scopeSpans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for s in ss
                .get("spans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(otlp_span(s, service.as_deref())?);
            }
        }
    }
    Ok(out)
}

fn otlp_span(s: &Value, service: Option<&str>) -> Result<Value, String> {
    let mut m = Map::new();
    let id_field = |k: &str| {
        s.get(k)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    m.insert(
        "traceId".into(),
        id_field("traceId")
            .ok_or("OTLP span without traceId")?
            .into(),
    );
    m.insert(
        "id".into(),
        id_field("spanId").ok_or("OTLP span without spanId")?.into(),
    );
    if let Some(p) = id_field("parentSpanId").filter(|p| !p.is_empty()) {
        m.insert("parentId".into(), p.into());
    }
    if let Some(k) = otlp_kind(s.get("kind")) {
        m.insert("kind".into(), k.into());
    }
    if let Some(n) = s.get("name").and_then(Value::as_str) {
        m.insert("name".into(), n.into());
    }
    let start = otlp_u64(s.get("startTimeUnixNano"));
    let end = otlp_u64(s.get("endTimeUnixNano"));
    if let Some(st) = start {
        m.insert("timestamp".into(), (st / 1000).into());
    }
    if let (Some(st), Some(en)) = (start, end) {
        m.insert("duration".into(), (en.saturating_sub(st) / 1000).into());
    }
    if let Some(svc) = service {
        m.insert("localEndpoint".into(), json!({ "serviceName": svc }));
    }
    let mut tags = Map::new();
    for (k, v) in otlp_attributes(s.get("attributes")) {
        tags.insert(k, v.into());
    }
    match s
        .get("status")
        .and_then(|st| otlp_u64(st.get("code")).or_else(|| status_name(st.get("code"))))
    {
        Some(2) => {
            tags.insert("otel.status_code".into(), "ERROR".into());
        }
        Some(1) => {
            tags.insert("otel.status_code".into(), "OK".into());
        }
        _ => {}
    }
    if !tags.is_empty() {
        m.insert("tags".into(), Value::Object(tags));
    }
    Ok(Value::Object(m))
}

fn status_name(v: Option<&Value>) -> Option<u64> {
    match v?.as_str()? {
        "STATUS_CODE_OK" => Some(1),
        "STATUS_CODE_ERROR" => Some(2),
        _ => None,
    }
}

/// The spans of one trace of Jaeger's v1 query API (`{traceID, spans, processes}`), in the
/// Zipkin v2 shape: parentId from the CHILD_OF reference, kind from the `span.kind` tag
/// (upper-cased), tags from `tags[]` with stringified values, serviceName from the span's process.
pub fn jaeger_trace_to_zipkin(trace: &Value) -> Vec<Value> {
    let procs = trace.get("processes");
    let mut out = Vec::new();
    for s in trace
        .get("spans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut m = Map::new();
        let get = |k: &str| {
            s.get(k)
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        };
        if let Some(t) = get("traceID") {
            m.insert("traceId".into(), t.into());
        }
        if let Some(id) = get("spanID") {
            m.insert("id".into(), id.into());
        }
        let parent = s
            .get("references")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("refType").and_then(Value::as_str) == Some("CHILD_OF"))
            .and_then(|r| r.get("spanID"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        if let Some(p) = parent {
            m.insert("parentId".into(), p.into());
        }
        if let Some(n) = s.get("operationName").and_then(Value::as_str) {
            m.insert("name".into(), n.into());
        }
        for (from, to) in [("startTime", "timestamp"), ("duration", "duration")] {
            if let Some(v) = s.get(from).filter(|v| v.is_u64()) {
                m.insert(to.into(), v.clone());
            }
        }
        let mut tags = Map::new();
        for t in s
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = t.get("key").and_then(Value::as_str) {
                let v = t.get("value").map(stringify).unwrap_or_default();
                if k == "span.kind" {
                    m.insert("kind".into(), v.to_ascii_uppercase().into());
                }
                tags.insert(k.to_string(), v.into());
            }
        }
        m.insert("tags".into(), Value::Object(tags));
        // Jaeger's own findings about the span (e.g. an id it had to re-assign).
        if let Some(w) = s.get("warnings").filter(|w| w.is_array()) {
            m.insert("warnings".into(), w.clone());
        }
        let service = s
            .get("processID")
            .and_then(Value::as_str)
            .and_then(|p| procs?.get(p))
            .and_then(|p| p.get("serviceName"))
            .cloned();
        if let Some(svc) = service {
            m.insert("localEndpoint".into(), json!({ "serviceName": svc }));
        }
        out.push(Value::Object(m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_body_becomes_zipkin_spans() {
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]},
            "scopeSpans": [{"scope": {"name": "meshtrace"}, "spans": [
                {"traceId": "463AC35C9F6413AD48485A3953BB6124", "spanId": "a2fb4a1d1a96d312",
                 "parentSpanId": "", "name": "GET /x", "kind": 2,
                 "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000002500000u64,
                 "attributes": [
                    {"key": "http.request.method", "value": {"stringValue": "GET"}},
                    {"key": "http.response.status_code", "value": {"intValue": "503"}},
                    {"key": "x.ok", "value": {"boolValue": true}},
                    {"key": "x.d", "value": {"doubleValue": 0.5}}],
                 "status": {"code": 2}},
                {"traceId": "463ac35c9f6413ad48485a3953bb6124", "spanId": "b2fb4a1d1a96d312",
                 "parentSpanId": "a2fb4a1d1a96d312", "name": "out", "kind": "SPAN_KIND_CLIENT",
                 "startTimeUnixNano": 1700000000001000000u64, "endTimeUnixNano": 1700000000001001000u64,
                 "status": {"code": 1}}
            ]}]
        }]});
        let spans = otlp_to_zipkin(&body).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0],
            json!({"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
                   "kind": "SERVER", "name": "GET /x", "timestamp": 1700000000000000u64,
                   "duration": 2500, "localEndpoint": {"serviceName": "gw"},
                   "tags": {"http.request.method": "GET", "http.response.status_code": "503",
                            "x.ok": "true", "x.d": "0.5", "otel.status_code": "ERROR"}})
        );
        assert_eq!(spans[1]["parentId"], "a2fb4a1d1a96d312");
        assert_eq!(spans[1]["kind"], "CLIENT");
        assert_eq!(spans[1]["duration"], 1);
        assert_eq!(spans[1]["tags"]["otel.status_code"], "OK");
        assert!(otlp_to_zipkin(&json!({"x": 1})).is_err());
        assert!(is_otlp(&body));
    }

    #[test]
    fn jaeger_v1_trace_becomes_zipkin_spans() {
        let trace = json!({"traceID": "463ac35c9f6413ad48485a3953bb6124", "spans": [
            {"traceID": "463ac35c9f6413ad48485a3953bb6124", "spanID": "b2fb4a1d1a96d312",
             "operationName": "get /y",
             "references": [{"refType": "CHILD_OF", "traceID": "463ac35c9f6413ad48485a3953bb6124", "spanID": "a2fb4a1d1a96d312"}],
             "startTime": 1795318966490536u64, "duration": 500,
             "tags": [{"key": "http.status_code", "type": "int64", "value": 200},
                      {"key": "error", "type": "bool", "value": true},
                      {"key": "span.kind", "type": "string", "value": "client"}],
             "processID": "p2"}],
            "processes": {"p2": {"serviceName": "svc2", "tags": []}}});
        let spans = jaeger_trace_to_zipkin(&trace);
        assert_eq!(
            spans[0],
            json!({"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "b2fb4a1d1a96d312",
                   "parentId": "a2fb4a1d1a96d312", "name": "get /y", "kind": "CLIENT",
                   "timestamp": 1795318966490536u64, "duration": 500,
                   "localEndpoint": {"serviceName": "svc2"},
                   "tags": {"http.status_code": "200", "error": "true", "span.kind": "client"}})
        );
    }
}
