//! The `x-b3-*` headers: arbitrary values, each present or absent, through the tracer.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const NAMES: [&str; 5] = [
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

fuzz_target!(|data: &[u8]| {
    let cfg = common::config();
    let (mask, rest) = data.split_first().map_or((0, data), |(m, r)| (*m, r));
    let values = common::values(rest, NAMES.len());
    let headers: Vec<(&str, &str)> = NAMES
        .iter()
        .zip(&values)
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, (n, v))| (*n, v.as_str()))
        .collect();
    common::through_tracer(cfg, &headers, Default::default());
});
