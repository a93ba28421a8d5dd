//! Spans as the tracer builds them from arbitrary requests and stream ends → Zipkin v2 JSON and
//! OTLP JSON: both must be JSON and carry the ids, the name and every tag value unchanged.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshtrace::export::{otlp, zipkin};
use meshtrace::tracer::StreamEnd;
use serde_json::Value;

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
struct Input {
    path: String,
    authority: String,
    method: String,
    user_agent: String,
    tenant: String,
    request_id: String,
    traceparent: String,
    status: Option<u64>,
    flags: Option<u64>,
    grpc: Option<u64>,
    sizes: (Option<u64>, Option<u64>),
    protocol: Option<String>,
    peer: Option<String>,
    upstream: Option<String>,
    cluster: Option<String>,
    now: u64,
}

fuzz_target!(|input: Input| {
    let cfg = common::config();
    let headers = [
        (":path", input.path.as_str()),
        (":authority", &input.authority),
        (":method", &input.method),
        ("user-agent", &input.user_agent),
        ("x-tenant", &input.tenant),
        ("x-request-id", &input.request_id),
        ("traceparent", &input.traceparent),
    ];
    let end = StreamEnd {
        now_ns: input.now,
        status: input.status,
        response_flags: input.flags,
        grpc_status: input.grpc,
        request_size: input.sizes.0,
        response_size: input.sizes.1,
        protocol: input.protocol,
        peer: input.peer,
        upstream_address: input.upstream,
        upstream_cluster: input.cluster,
        ..Default::default()
    };
    let spans = common::through_tracer(cfg, &headers, end);
    let zipkin: Value = serde_json::from_str(&zipkin::encode(&spans)).expect("zipkin JSON");
    let otlp: Value = serde_json::from_str(&otlp::encode(&spans)).expect("OTLP JSON");
    let otlp_spans: Vec<&Value> = otlp["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
        .flat_map(|s| s["spans"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(zipkin.as_array().map(Vec::len), Some(spans.len()));
    assert_eq!(otlp_spans.len(), spans.len());
    for (i, span) in spans.iter().enumerate() {
        let z = &zipkin[i];
        assert_eq!(z["traceId"], span.trace_id.to_string());
        assert_eq!(z["id"], span.id.to_string());
        assert_eq!(z["name"], span.name.as_str());
        assert_eq!(
            z["parentId"].as_str(),
            span.parent_id.map(|p| p.to_string()).as_deref()
        );
        for extra in &span.extra {
            assert_eq!(
                z["tags"][&*extra.key],
                extra.value.as_str(),
                "zipkin tag {}",
                extra.key
            );
        }
        let o = otlp_spans
            .iter()
            .find(|o| o["spanId"] == span.id.to_string())
            .expect("OTLP span");
        assert_eq!(o["name"], span.name.as_str());
        let trace = format!("{:016x}{:016x}", span.trace_id.high, span.trace_id.low);
        assert_eq!(o["traceId"], trace.as_str());
    }
});
