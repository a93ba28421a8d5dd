//! The ABI-level layer between the core's unit tests and real Envoy: the built `dist/meshtrace.wasm`
//! hosted in wasmtime by a test host that implements every import the module declares, drives the
//! callbacks Envoy drives, and answers every host call with every failure. The module must never
//! trap, every header callback must answer Continue, and every failure must be counted.
//! `make abi` (part of `make test`) runs it; `MESHTRACE_WASM` points it at another module.

// The host implements the whole ABI surface and records more than every test reads (the
// recorded fields are there for the next case that needs them).
#![allow(dead_code)]

#[path = "abi/checks.rs"]
mod checks;
#[path = "abi/faults.rs"]
mod faults;
#[path = "abi/guest.rs"]
mod guest;
#[path = "abi/host.rs"]
mod host;
#[path = "abi/host_maps.rs"]
mod host_maps;
#[path = "abi/host_misc.rs"]
mod host_misc;
#[path = "abi/lifecycle.rs"]
mod lifecycle;
#[path = "abi/mem.rs"]
mod mem;
#[path = "abi/report.rs"]
mod report;
#[path = "abi/state.rs"]
mod state;
#[path = "abi/wasi.rs"]
mod wasi;
#[path = "abi/wire.rs"]
mod wire;

use lifecycle::{Driver, Reply, Scenario, CONFIG, ROOT};
use report::Outcome;
use state::{BufferShape, HostState, Phase};

/// Without faults: headers propagated, one export of every span, all counted exported.
#[test]
fn baseline_exports_every_span() {
    let h = guest::harness();
    let run = lifecycle::run(h, &Scenario::standard(), HostState::new(CONFIG.as_bytes()));
    assert!(checks::trap(&run).is_none(), "{:?}", checks::trap(&run));
    assert_eq!(checks::common(&run), Vec::<String>::new());
    assert_eq!(run.configured, Some(true));
    let s = &run.state;
    assert_eq!(s.http_calls.len(), 1, "one export call");
    let call = &s.http_calls[0];
    assert_eq!(call.cluster, "zipkin");
    let method = call.headers.iter().find(|(k, _)| k == b":method");
    assert_eq!(method.map(|(_, v)| v.as_slice()), Some(&b"POST"[..]));
    let body: serde_json::Value = serde_json::from_slice(&call.body).expect("export body is JSON");
    assert_eq!(
        body.as_array().map(Vec::len),
        Some(5),
        "5 spans in one batch"
    );
    assert!(
        s.edits.iter().any(|e| e.key == "x-b3-traceid"),
        "the module wrote x-b3-traceid"
    );
    for (name, want) in [
        (checks::SPANS_RECORDED, 5),
        (checks::SPANS_EXPORTED, 5),
        (checks::SPANS_DROPPED, 0),
        (checks::EXPORT_OK, 1),
        (checks::EXPORT_FAILED, 0),
        (checks::INTERNAL_ERRORS, 0),
    ] {
        assert_eq!(s.counter(name), want, "{name}; {}", checks::counters(s));
    }
    assert_eq!(run.root_done, Some(true));
}

/// Every import × every non-Ok status (and an unknown one), on every call and on the first call
/// after configure. WASI imports are in the matrix too: their "statuses" are errnos.
#[test]
fn every_host_call_fails_every_way() {
    let h = guest::harness();
    report::emit(&format!(
        "module {} (compiled in {} ms)",
        h.path.display(),
        h.compile_ms
    ));
    let mut imports = h.imports("env");
    imports.extend(h.imports("wasi_snapshot_preview1"));
    let cases = faults::cases(&imports);
    let outcomes = report::parallel(&cases, |c| faults::run_case(h, c));
    let columns: Vec<String> = faults::STATUSES.iter().map(i32::to_string).collect();
    for variant in faults::Variant::ALL {
        let rows: Vec<(String, Vec<&str>)> = imports
            .iter()
            .map(|i| {
                let cells = cases
                    .iter()
                    .zip(&outcomes)
                    .filter(|(c, _)| &c.import == i && c.variant == variant)
                    .map(|(_, o)| o.cell())
                    .collect();
                (i.clone(), cells)
            })
            .collect();
        report::emit(&report::table(variant.label(), &columns, &rows));
    }
    report::emit(report::LEGEND);
    let labelled: Vec<(String, &Outcome)> =
        cases.iter().map(|c| c.label()).zip(&outcomes).collect();
    let (n, text) = report::failures(&labelled);
    assert!(n == 0, "{n} of {} cases failed:\n{text}", cases.len());
    let fired = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::NotCalled))
        .count();
    assert!(fired > cases.len() / 2, "most faults must reach a call");
}

/// One malformed answer of the host per row; each runs the whole lifecycle.
#[test]
fn malformed_host_data_is_survived_and_counted() {
    let h = guest::harness();
    let mut rows: Vec<(String, HostState, Scenario, bool)> = Vec::new();
    let sc = Scenario::standard();
    let mut add = |name: &str, f: &dyn Fn(&mut HostState, &mut Scenario), counted: bool| {
        let (mut s, mut c) = (HostState::new(CONFIG.as_bytes()), sc.clone());
        f(&mut s, &mut c);
        rows.push((name.to_string(), s, c, counted));
    };
    let good = wire::serialize(&sc.request);
    add(
        "request map empty (0 pairs)",
        &|s, _| s.data.request_pairs = Some(wire::serialize(&[])),
        false,
    );
    add(
        "request map truncated",
        &|s, _| s.data.request_pairs = Some(good[..good.len() - 7].to_vec()),
        true,
    );
    add(
        "request map count lies",
        &|s, _| {
            let mut b = good.clone();
            b[..4].copy_from_slice(&500u32.to_le_bytes());
            s.data.request_pairs = Some(b)
        },
        true,
    );
    add(
        "request map garbage",
        &|s, _| s.data.request_pairs = Some(vec![0xff; 37]),
        true,
    );
    add(
        "request map size 0",
        &|s, _| s.data.pairs_zero_size = true,
        false,
    );
    add(
        "request header value not UTF-8",
        &|_, c| c.request.push((b"x-b3-traceid".to_vec(), vec![0xc3, 0x28])),
        false,
    );
    add(
        "answer with 0 headers (reset, timeout, overflow)",
        // Envoy has no response header map for a failed call: reading it is BadArgument.
        &|s, c| {
            s.data.call_header_status = Some(2);
            c.reply.num_headers = Some(0)
        },
        true,
    );
    add(
        "0 headers but a body size",
        &|s, c| {
            s.data.call_header_status = Some(2);
            c.reply.num_headers = Some(0);
            c.reply.body_size = Some(4096)
        },
        true,
    );
    add(
        ":status not a number",
        &|_, c| c.reply.headers = wire::pairs(&[(":status", "2x2")]),
        true,
    );
    add(
        ":status not UTF-8",
        &|_, c| c.reply.headers = vec![(b":status".to_vec(), vec![0xff, 0xfe])],
        true,
    );
    add(
        ":status missing",
        &|_, c| c.reply.headers = wire::pairs(&[("server", "x")]),
        true,
    );
    for status in [1, 2, 6, 10, 99] {
        add(
            &format!(":status read answers {status}"),
            &move |s, _| s.data.call_header_status = Some(status),
            true,
        );
    }
    add(
        "buffers oversized",
        &|s, _| s.data.buffer_shape = BufferShape::Oversized(64),
        false,
    );
    add(
        "buffers truncated (config half read)",
        &|s, _| s.data.buffer_shape = BufferShape::Truncated(50),
        false,
    );
    add(
        "allocator fails from the start",
        &|s, _| s.data.alloc_fails_from = Some(Phase::Start),
        false,
    );
    add(
        "allocator fails once running",
        &|s, _| s.data.alloc_fails_from = Some(Phase::Running),
        true,
    );
    let mut problems = Vec::new();
    for (name, state, sc, must_count) in rows {
        let run = &lifecycle::run(h, &sc, state);
        let mut p: Vec<String> = checks::trap(run).into_iter().collect();
        p.extend(checks::common(run));
        if run.configured == Some(true) {
            p.extend(checks::accounting(run));
        }
        if must_count && run.configured == Some(true) && !checks::counted(&run.state) {
            p.push(format!("not counted: {}", checks::counters(&run.state)));
        }
        let line = if p.is_empty() {
            "ok".to_string()
        } else {
            p.join("; ")
        };
        report::emit(&format!("  {name}: {line}"));
        if !p.is_empty() {
            problems.push(format!("{name}: {line}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Callbacks Envoy should never send, and a configuration that is not JSON.
#[test]
fn stray_callbacks_and_bad_configuration() {
    let h = guest::harness();
    let mut d = Driver::new(h, HostState::new(b"{not json"));
    d.initialize().expect("initialize");
    // Before any root exists: a tick, a log, an answer for contexts nobody created.
    for (name, args) in [
        ("proxy_on_tick", vec![ROOT]),
        ("proxy_on_log", vec![999]),
        ("proxy_on_done", vec![999]),
        ("proxy_on_delete", vec![999]),
        ("proxy_on_request_headers", vec![999, 3, 1]),
        ("proxy_on_http_call_response", vec![ROOT, 42, 1, 0, 0]),
    ] {
        let r = d.guest.call(name, &args);
        assert!(r.is_ok(), "{name}{args:?} trapped");
    }
    assert!(
        !d.start().expect("start"),
        "a configuration that is not JSON is refused"
    );
    assert!(
        checks::refusal_logged(d.guest.state()),
        "the refusal names the configuration"
    );
    // A stream of the refused root, then an answer for a token never handed out.
    d.stream(7, &Scenario::standard())
        .expect("a stream of an unconfigured root");
    let reply = Reply {
        headers: wire::pairs(&[(":status", "202")]),
        body: Vec::new(),
        num_headers: None,
        body_size: None,
    };
    d.answer(77, &reply)
        .expect("an answer for an unknown token");
    d.finish().expect("teardown");
    let run = d.into_run();
    assert!(checks::trap(&run).is_none());
    assert_eq!(run.state.http_calls.len(), 0);
}
