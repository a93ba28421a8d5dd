//! The single `b3` header, alone and beside an `x-b3-traceid`, through the tracer.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let cfg = common::config();
    let v = common::values(data, 2);
    common::through_tracer(cfg, &[("b3", &v[0])], Default::default());
    common::through_tracer(
        cfg,
        &[("b3", &v[0]), ("x-b3-traceid", &v[1])],
        Default::default(),
    );
});
