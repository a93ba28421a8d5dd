//! Expectations for the single cases (data faults, odd callbacks, WASI): small checks that each
//! return the problems they find, combined by [`verdict`].

use super::checks::{
    self, EXPORT_FAILED, EXPORT_OK, SPANS_DROPPED, SPANS_EXPORTED, SPANS_RECORDED,
};
use super::guest::{Harness, Stop};
use super::lifecycle::{Driver, Run, Scenario};
use super::report::Outcome;
use super::state::HostState;

pub type CaseFn = Box<dyn Fn(&Harness) -> Outcome + Send + Sync>;

pub struct Case {
    pub name: String,
    pub run: CaseFn,
}

pub fn case(
    name: impl Into<String>,
    run: impl Fn(&Harness) -> Outcome + Send + Sync + 'static,
) -> Case {
    Case {
        name: name.into(),
        run: Box::new(run),
    }
}

/// A trap wins; then the common checks and the case's own; `ok` when nothing is wrong.
pub fn verdict(run: &Run, own: Vec<String>, ok: Outcome) -> Outcome {
    if let Some(trap) = checks::trap(run) {
        return Outcome::Trap(trap);
    }
    let mut problems = checks::common(run);
    problems.extend(own);
    if problems.is_empty() {
        return ok;
    }
    Outcome::Fail(format!(
        "{} ({})",
        problems.join("; "),
        checks::counters(&run.state)
    ))
}

/// The standard lifecycle on a prepared state.
pub fn run(h: &Harness, sc: &Scenario, state: HostState) -> Run {
    super::lifecycle::run(h, sc, state)
}

/// The lifecycle with `extra` slipped in right after a successful configure.
pub fn run_with(
    h: &Harness,
    sc: &Scenario,
    state: HostState,
    extra: impl FnOnce(&mut Driver) -> Result<(), Stop>,
) -> Run {
    let mut d = Driver::new(h, state);
    let _ = (|| -> Result<(), Stop> {
        d.initialize()?;
        if d.start()? {
            extra(&mut d)?;
            d.streams(sc)?;
            d.tick_and_answer(&sc.reply)?;
        }
        d.finish()
    })();
    d.into_run()
}

pub fn configured(run: &Run) -> Vec<String> {
    match run.configured {
        Some(true) => Vec::new(),
        other => vec![format!("on_configure answered {other:?}, expected true")],
    }
}

pub fn refused(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    if run.configured != Some(false) {
        p.push(format!(
            "on_configure answered {:?}, expected false",
            run.configured
        ));
    }
    if !checks::refusal_logged(&run.state) {
        p.push("no log line (warn or above) names the configuration problem".to_string());
    }
    p
}

pub fn accounting(run: &Run) -> Vec<String> {
    checks::accounting(run).into_iter().collect()
}

pub fn internal_counted(run: &Run) -> Vec<String> {
    let n = run.state.counter(checks::INTERNAL_ERRORS);
    if n > 0 {
        return Vec::new();
    }
    vec!["the failure was not counted in meshtrace_internal_errors".to_string()]
}

/// All spans of the run reached the collector in one accepted export.
pub fn exported(run: &Run, spans: i64) -> Vec<String> {
    let s = &run.state;
    let got = (
        s.counter(SPANS_RECORDED),
        s.counter(SPANS_EXPORTED),
        s.counter(EXPORT_OK),
    );
    if got == (spans, spans, 1) {
        return Vec::new();
    }
    vec![format!(
        "expected {spans} spans recorded and exported in 1 accepted export, got recorded {}, \
         exported {}, export ok {}",
        got.0, got.1, got.2
    )]
}

/// The export failed: counted once, and its spans counted dropped.
pub fn export_failed(run: &Run, spans: i64) -> Vec<String> {
    let s = &run.state;
    let (failed, dropped) = (s.counter(EXPORT_FAILED), s.counter(SPANS_DROPPED));
    let mut p = accounting(run);
    if run.state.http_calls.is_empty() {
        p.push("no export call was made".to_string());
    }
    if failed < 1 || dropped < spans || s.counter(EXPORT_OK) != 0 {
        p.push(format!(
            "expected the export counted failed with its {spans} spans dropped, got \
             export_requests_failed {failed}, spans_dropped {dropped}, export_requests_ok {}",
            s.counter(EXPORT_OK)
        ));
    }
    p
}

/// Cases whose correct ending is either: configured and accounted, or refused with a reason.
pub fn configured_or_refused(run: &Run) -> (Vec<String>, Outcome) {
    match run.configured {
        Some(false) => (refused(run), Outcome::Refused),
        _ => {
            let mut p = configured(run);
            p.extend(accounting(run));
            (p, Outcome::Ok)
        }
    }
}

/// Inputs Envoy never produces, where either reading is defensible (skip it and count, or make
/// sense of it): survived, accounted, and the outcome says which way the module went.
pub fn survived(run: &Run) -> (Vec<String>, Outcome) {
    let mut p = configured(run);
    p.extend(accounting(run));
    let outcome = if checks::counted(&run.state) {
        Outcome::Counted
    } else {
        Outcome::Ok
    };
    (p, outcome)
}

pub fn concat(parts: Vec<Vec<String>>) -> Vec<String> {
    parts.into_iter().flatten().collect()
}
