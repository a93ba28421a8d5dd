//! Data faults: the host answers Ok but hands over malformed or surprising data — header maps,
//! buffers, configuration, allocation failures.

use super::checks::INVALID_CONTEXT;
use super::expect::{self, case, concat, verdict, Case};
use super::lifecycle::{Scenario, CONFIG};
use super::report::Outcome;
use super::state::{BufferShape, HostState, Phase};
use super::wire;

const SPANS: i64 = 5;

fn state() -> HostState {
    HostState::new(CONFIG.as_bytes())
}

pub fn cases() -> Vec<Case> {
    let mut all = header_cases();
    all.extend(encoding_cases());
    all.extend(buffer_cases());
    all.extend(config_cases());
    all
}

/// The standard request headers as the wire format, for mangling.
fn request_serialization() -> Vec<u8> {
    wire::serialize(&Scenario::standard().request)
}

/// A serialization whose count says 5 but whose data stops partway through the strings.
fn truncated() -> Vec<u8> {
    let full = request_serialization();
    full[..4 + 5 * 8 + 10].to_vec()
}

/// Count 0x7fffffff, then noise: a module trusting the count sizes a 16 GiB table.
fn garbage() -> Vec<u8> {
    let mut s = HostState::new(b"");
    let mut bytes = vec![0xff, 0xff, 0xff, 0x7f];
    bytes.extend((0..60).map(|_| s.random_byte()));
    bytes
}

/// The right serialization with a count of 500: a module trusting it reads past the end.
fn count_lies() -> Vec<u8> {
    let mut bytes = request_serialization();
    bytes[..4].copy_from_slice(&500u32.to_le_bytes());
    bytes
}

fn header_cases() -> Vec<Case> {
    let mangled = [
        (
            "request headers: truncated serialization (count 5, data short)",
            truncated(),
        ),
        ("request headers: garbage serialization", garbage()),
        ("request headers: count 500, data for 5", count_lies()),
    ];
    let mut cases: Vec<Case> = mangled
        .into_iter()
        .map(|(name, raw)| {
            case(name, move |h| {
                let mut st = state();
                st.data.request_pairs = Some(raw.clone());
                let run = expect::run(h, &Scenario::standard(), st);
                let own = concat(vec![
                    expect::configured(&run),
                    expect::internal_counted(&run),
                    expect::accounting(&run),
                ]);
                verdict(&run, own, Outcome::Counted)
            })
        })
        .collect();
    // Zero bytes is not a valid serialization (even an empty map has its count), but reading
    // it as "no headers" is what the Rust SDK does; either reading passes.
    cases.push(case(
        "request headers: size 0 with a non-null pointer",
        |h| {
            let mut st = state();
            st.data.pairs_zero_size = true;
            let run = expect::run(h, &Scenario::standard(), st);
            let (own, ok) = expect::survived(&run);
            verdict(&run, own, ok)
        },
    ));
    cases.push(case("request headers: empty map (0 pairs)", |h| {
        let mut sc = Scenario::standard();
        sc.request.clear();
        sc.request_id = false;
        let run = expect::run(h, &sc, state());
        let own = concat(vec![expect::configured(&run), expect::accounting(&run)]);
        verdict(&run, own, Outcome::Ok)
    }));
    cases
}

fn with_header(key: &[u8], value: &[u8]) -> Scenario {
    let mut sc = Scenario::standard();
    sc.request.retain(|(k, _)| k != key);
    sc.request.push((key.to_vec(), value.to_vec()));
    sc
}

fn encoding_cases() -> Vec<Case> {
    vec![
        case("request headers: non-UTF-8 value (user-agent)", |h| {
            let sc = with_header(b"user-agent", b"abi\xff\xfe\x80test");
            let run = expect::run(h, &sc, state());
            let own = concat(vec![
                expect::configured(&run),
                expect::exported(&run, SPANS),
            ]);
            verdict(&run, own, Outcome::Ok)
        }),
        case(
            "request headers: non-UTF-8 x-b3-traceid (invalid context)",
            |h| {
                let mut sc = with_header(b"x-b3-traceid", b"463ac35c9f6413ad\xff\xfe");
                sc.request
                    .push((b"x-b3-spanid".to_vec(), b"a2fb4a1d1a96d312".to_vec()));
                let run = expect::run(h, &sc, state());
                let mut own = concat(vec![
                    expect::configured(&run),
                    expect::exported(&run, SPANS),
                ]);
                if run.state.counter(INVALID_CONTEXT) == 0 {
                    own.push(
                        "the non-UTF-8 trace id was not counted in meshtrace_invalid_context"
                            .into(),
                    );
                }
                verdict(&run, own, Outcome::Counted)
            },
        ),
        // Envoy's codecs only admit token characters in names, so this cannot come from Envoy.
        case("request headers: non-UTF-8 header name", |h| {
            let sc = with_header(b"x-\xc3\x28-name", b"v");
            let run = expect::run(h, &sc, state());
            let (own, ok) = expect::survived(&run);
            verdict(&run, own, ok)
        }),
    ]
}

/// A failed export whose body the module may read: the buffer faults reach that read as well.
fn failing_collector() -> Scenario {
    let mut sc = Scenario::standard();
    sc.reply.headers = wire::pairs(&[(":status", "503")]);
    sc.reply.body = b"upstream connect error or disconnect/reset before headers".to_vec();
    sc
}

fn buffer_cases() -> Vec<Case> {
    let shapes = [
        (
            "get_buffer_bytes: more bytes than asked for",
            BufferShape::Oversized(64),
        ),
        (
            "get_buffer_bytes: half the bytes asked for",
            BufferShape::Truncated(50),
        ),
    ];
    let mut cases: Vec<Case> = shapes
        .into_iter()
        .map(|(name, shape)| {
            case(name, move |h| {
                let mut st = state();
                st.data.buffer_shape = shape;
                let run = expect::run(h, &failing_collector(), st);
                let (own, ok) = expect::configured_or_refused(&run);
                verdict(&run, own, ok)
            })
        })
        .collect();
    // on_configure announced a non-empty configuration and got none: running on the defaults
    // (1% sampling, Istio's collector) would silently ignore the operator's settings.
    cases.push(case(
        "get_buffer_bytes: no bytes (Ok, size 0) for the configuration",
        |h| {
            let mut st = state();
            st.data.buffer_shape = BufferShape::Truncated(0);
            let run = expect::run(h, &failing_collector(), st);
            verdict(&run, expect::refused(&run), Outcome::Refused)
        },
    ));
    cases
}

fn config_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        (
            "plugin configuration: not JSON",
            b"sampling: {rate: 1.0}".to_vec(),
        ),
        (
            "plugin configuration: not UTF-8",
            b"{\"service_name\":\"\xff\xfe\"}".to_vec(),
        ),
        (
            "plugin configuration: JSON but not an object",
            b"[1,2,3]".to_vec(),
        ),
    ]
    .into_iter()
    .map(|(name, config)| {
        case(name, move |h| {
            let run = expect::run(h, &Scenario::standard(), HostState::new(&config));
            verdict(&run, expect::refused(&run), Outcome::Refused)
        })
    })
    .collect();
    cases.push(case("plugin configuration: empty (all defaults)", |h| {
        let run = expect::run(h, &Scenario::standard(), HostState::new(b""));
        let own = concat(vec![expect::configured(&run), expect::accounting(&run)]);
        verdict(&run, own, Outcome::Ok)
    }));
    cases.push(case(
        "proxy_on_memory_allocate → 0 from the start (host answers 6)",
        |h| {
            let mut st = state();
            st.data.alloc_fails_from = Some(Phase::Start);
            let run = expect::run(h, &Scenario::standard(), st);
            verdict(&run, expect::refused(&run), Outcome::Refused)
        },
    ));
    cases.push(case(
        "proxy_on_memory_allocate → 0 after configure (host answers 6)",
        |h| {
            let mut st = state();
            st.data.alloc_fails_from = Some(Phase::Running);
            let run = expect::run(h, &Scenario::standard(), st);
            let own = concat(vec![
                expect::configured(&run),
                expect::internal_counted(&run),
                expect::accounting(&run),
            ]);
            verdict(&run, own, Outcome::Counted)
        },
    ));
    cases
}
