//! What every fuzz target checks: headers through the tracer as a request would bring them, and
//! the invariants of what meshtrace then forwards and exports.
#![allow(dead_code)]

use meshtrace::config::{self, Config};
use meshtrace::metrics::Counter;
use meshtrace::span::Span;
use meshtrace::tracer::{self, Host, Node, StreamEnd};

/// Every format read, a rate header, and a header tag: all parsers on the request path are live.
/// Parsed once per process: the targets fuzz requests, `config_json` fuzzes the parser.
pub fn config() -> &'static Config {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(parse_config)
}

fn parse_config() -> Config {
    let json = br#"{
        "sampling": {"rate": 1.0, "override_header": "l5d-sample"},
        "propagation": {"extract": ["b3_single", "b3_multi", "w3c"], "inject": ["b3_multi", "b3_single", "w3c"]},
        "tags": {"request_headers": ["x-tenant"], "static": {"zone": "fuzz"}}
    }"#;
    match config::parse(json) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz configuration is invalid: {e}"),
    }
}

pub struct FuzzHost(pub u64);

impl Host for FuzzHost {
    fn random_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn count(&mut self, _c: Counter, _n: u64) {}
}

fn is_lower_hex(v: &str, lens: &[usize]) -> bool {
    lens.contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && v.bytes().any(|b| b != b'0')
}

/// Runs one request's headers through the tracer: every id it forwards is 16 or 32 lower-hex,
/// and each header it writes parses back to the same context. Returns the finished spans.
pub fn through_tracer(cfg: &Config, headers: &[(&str, &str)], end: StreamEnd) -> Vec<Span> {
    let mut host = FuzzHost(7);
    let start = tracer::start(cfg, headers.iter().copied(), || 1_000, &mut host);
    for edit in &start.edits {
        assert_ne!(
            &*edit.name, "tracestate",
            "tracestate is passed on as it came"
        );
        let Some(v) = edit.value.as_deref() else {
            continue;
        };
        match &*edit.name {
            "x-b3-traceid" => assert!(is_lower_hex(v, &[16, 32]), "forwarded traceid {v:?}"),
            "x-b3-spanid" | "x-b3-parentspanid" => {
                assert!(is_lower_hex(v, &[16]), "forwarded {} {v:?}", edit.name)
            }
            "x-b3-sampled" => assert!(v == "0" || v == "1", "forwarded sampled {v:?}"),
            "b3" => check_single(v),
            "traceparent" => {
                assert!(
                    meshtrace::propagation::w3c::parse(v).is_some(),
                    "forwarded traceparent {v:?}"
                )
            }
            _ => {}
        }
    }
    match start.span {
        Some(open) => tracer::finish(
            cfg,
            &Node {
                id: "fuzz".into(),
                service_name: "fuzz".into(),
            },
            open,
            end,
        ),
        None => Vec::new(),
    }
}

/// `b3: trace-span[-sampled[-parent]]` or a bare decision, as meshtrace writes it.
fn check_single(v: &str) {
    let parts: Vec<&str> = v.split('-').collect();
    if parts.len() == 1 {
        assert!(matches!(parts[0], "0" | "1" | "d"), "forwarded b3 {v:?}");
        return;
    }
    assert!(
        is_lower_hex(parts[0], &[16, 32]),
        "forwarded b3 trace {v:?}"
    );
    assert!(is_lower_hex(parts[1], &[16]), "forwarded b3 span {v:?}");
    if let Some(s) = parts.get(2) {
        assert!(matches!(*s, "0" | "1" | "d"), "forwarded b3 flag {v:?}");
    }
    if let Some(p) = parts.get(3) {
        assert!(is_lower_hex(p, &[16]), "forwarded b3 parent {v:?}");
    }
    assert!(parts.len() <= 4, "forwarded b3 {v:?}");
}

/// Splits fuzz input into header values at NUL bytes (one value per listed header), lossily as
/// the adapter reads non-UTF-8 values.
pub fn values(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data
        .split(|&b| b == 0)
        .take(n)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    out.resize(n, String::new());
    out
}
