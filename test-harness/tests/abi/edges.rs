//! The collector's odd answers, callbacks for contexts and tokens the module never saw, a tick
//! before configure, and WASI randomness failing.

use super::expect::{self, case, concat, verdict, Case};
use super::faults::STATUSES;
use super::lifecycle::{Driver, Scenario, CONFIG, ROOT};
use super::report::Outcome;
use super::state::{Fault, HostState, Scope};
use super::wire;

const SPANS: i64 = 5;
const EIO: i32 = 29;

fn state() -> HostState {
    HostState::new(CONFIG.as_bytes())
}

pub fn cases() -> Vec<Case> {
    let mut all = reply_cases();
    all.extend(context_cases());
    all.extend(wasi_cases());
    all
}

fn failed_export(h: &super::guest::Harness, sc: Scenario, st: HostState) -> Outcome {
    let run = expect::run(h, &sc, st);
    let own = concat(vec![
        expect::configured(&run),
        expect::export_failed(&run, SPANS),
    ]);
    verdict(&run, own, Outcome::Counted)
}

/// Envoy's form of a reset, timeout or oversized answer: on_http_call_response with 0 headers.
fn reset() -> Scenario {
    let mut sc = Scenario::standard();
    sc.reply.headers.clear();
    sc.reply.num_headers = Some(0);
    sc
}

fn reply_cases() -> Vec<Case> {
    let mut cases = vec![case(
        "call response: 0 headers (reset), :status NotFound",
        |h| failed_export(h, reset(), state()),
    )];
    for status in STATUSES.into_iter().filter(|s| *s != 1) {
        cases.push(case(
            format!("call response: 0 headers, :status lookup answers {status}"),
            move |h| {
                let mut st = state();
                st.data.call_header_status = Some(status);
                failed_export(h, reset(), st)
            },
        ));
    }
    for status in STATUSES {
        cases.push(case(
            format!("call response: 1 header, :status lookup answers {status}"),
            move |h| {
                let mut st = state();
                st.data.call_header_status = Some(status);
                failed_export(h, Scenario::standard(), st)
            },
        ));
    }
    cases.push(case("call response: headers without :status", |h| {
        let mut sc = Scenario::standard();
        sc.reply.headers = wire::pairs(&[("server", "collector")]);
        failed_export(h, sc, state())
    }));
    cases.push(case("call response: 0 headers, body_size 100", |h| {
        let mut sc = reset();
        sc.reply.body = b"upstream request timeout ".repeat(4);
        failed_export(h, sc, state())
    }));
    let statuses: [(&str, &[u8]); 4] = [
        ("not a number", b"abc"),
        ("not UTF-8", b"2\xff2"),
        ("empty", b""),
        ("out of range", b"99999999999999999999"),
    ];
    for (what, value) in statuses {
        cases.push(case(format!("call response: :status {what}"), move |h| {
            let mut sc = Scenario::standard();
            sc.reply.headers = vec![(b":status".to_vec(), value.to_vec())];
            failed_export(h, sc, state())
        }));
    }
    cases.push(case("call response: 503 with a body", |h| {
        let mut sc = Scenario::standard();
        sc.reply.headers = wire::pairs(&[(":status", "503")]);
        sc.reply.body = b"no healthy upstream".to_vec();
        failed_export(h, sc, state())
    }));
    cases
}

/// One callback with ids the module never created, between configure and the normal streams;
/// afterwards the module must still trace and export as usual.
fn stray(name: &'static str, args: [i32; 5]) -> Case {
    let label = format!("unknown id: {name}{args:?}");
    case(label, move |h| {
        let sc = Scenario::standard();
        let run = expect::run_with(h, &sc, state(), |d: &mut Driver| {
            if name.ends_with("_headers") {
                d.header_callback(name, &args[..3])
            } else {
                d.guest.call(name, &args).map(|_| ())
            }
        });
        let own = concat(vec![
            expect::configured(&run),
            expect::exported(&run, SPANS),
        ]);
        verdict(&run, own, Outcome::Ok)
    })
}

fn context_cases() -> Vec<Case> {
    let mut cases = vec![
        stray("proxy_on_request_headers", [999, 3, 1, 0, 0]),
        stray("proxy_on_response_headers", [999, 2, 1, 0, 0]),
        stray("proxy_on_log", [999, 0, 0, 0, 0]),
        stray("proxy_on_done", [999, 0, 0, 0, 0]),
        stray("proxy_on_delete", [999, 0, 0, 0, 0]),
        stray("proxy_on_tick", [999, 0, 0, 0, 0]),
        stray("proxy_on_context_create", [1000, 999, 0, 0, 0]),
        stray("proxy_on_http_call_response", [ROOT, 4242, 1, 0, 0]),
    ];
    cases.push(case(
        "call response for an unknown token, then the real one",
        |h| {
            let sc = Scenario::standard();
            let mut d = Driver::new(h, state());
            let _ = (|| {
                d.initialize()?;
                if d.start()? {
                    d.streams(&sc)?;
                    d.tick()?;
                    d.answer(777, &sc.reply)?;
                    let tokens: Vec<u32> =
                        d.guest.state().http_calls.iter().map(|c| c.token).collect();
                    for t in tokens {
                        d.answer(t as i32, &sc.reply)?;
                    }
                }
                d.finish()
            })();
            let run = d.into_run();
            let own = concat(vec![
                expect::configured(&run),
                expect::exported(&run, SPANS),
            ]);
            verdict(&run, own, Outcome::Ok)
        },
    ));
    cases.push(case(
        "a stream and an answer for a root that refused its configuration",
        |h| {
            let sc = Scenario::standard();
            let mut d = Driver::new(h, HostState::new(b"{not json"));
            let _ = (|| {
                d.initialize()?;
                d.start()?;
                d.stream(7, &sc)?;
                d.tick()?;
                d.answer(77, &sc.reply)?;
                d.finish()
            })();
            let run = d.into_run();
            let mut own = expect::refused(&run);
            if !run.state.http_calls.is_empty() {
                own.push("an unconfigured root made an export call".to_string());
            }
            verdict(&run, own, Outcome::Ok)
        },
    ));
    cases.push(case("proxy_on_tick before configure", |h| {
        let sc = Scenario::standard();
        let mut d = Driver::new(h, state());
        let _ = (|| {
            d.initialize()?;
            d.create_root()?;
            d.tick()?;
            if d.configure()? {
                d.streams(&sc)?;
                d.tick_and_answer(&sc.reply)?;
            }
            d.finish()
        })();
        let run = d.into_run();
        let own = concat(vec![
            expect::configured(&run),
            expect::exported(&run, SPANS),
        ]);
        verdict(&run, own, Outcome::Ok)
    }));
    cases
}

/// The matrix fails random_get with every errno number too; these name the realistic one.
fn wasi_cases() -> Vec<Case> {
    [
        (
            "random_get → EIO (29) on every call, from _initialize",
            Scope::Always,
        ),
        (
            "random_get → EIO (29) from vm_start on",
            Scope::AfterInitialize,
        ),
    ]
    .into_iter()
    .map(|(name, scope)| {
        case(name, move |h| {
            let mut st = state();
            st.fault = Some(Fault::new("random_get", EIO, scope));
            let run = expect::run(h, &Scenario::standard(), st);
            if run.trap.is_none() && run.state.injected() == 0 {
                return Outcome::NotCalled;
            }
            let own = concat(vec![
                expect::configured(&run),
                expect::internal_counted(&run),
                expect::exported(&run, SPANS),
            ]);
            verdict(&run, own, Outcome::Counted)
        })
    })
    .collect()
}
