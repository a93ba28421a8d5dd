//! The per-request rate header (`l5d-sample` style): a rate in 0..=1 or nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let v = String::from_utf8_lossy(data);
    if let Some(r) = meshtrace::sampling::parse_rate(&v) {
        assert!(r.is_finite() && (0.0..=1.0).contains(&r), "{v:?} -> {r}");
    }
    let cfg = common::config();
    common::through_tracer(cfg, &[("l5d-sample", &v)], Default::default());
});
