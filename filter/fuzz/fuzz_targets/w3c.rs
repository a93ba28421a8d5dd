//! `traceparent` and `tracestate`: the parser alone (a parsed context formats back to itself) and
//! through the tracer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshtrace::propagation::w3c;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let v = common::values(data, 2);
    if let Some(p) = w3c::parse(&v[0]) {
        let again = w3c::parse(&w3c::format(p.trace_id, p.span_id, p.sampled));
        assert_eq!(again, Some(p), "{:?}", v[0]);
    }
    let cfg = common::config();
    common::through_tracer(
        cfg,
        &[("traceparent", &v[0]), ("tracestate", &v[1])],
        Default::default(),
    );
});
