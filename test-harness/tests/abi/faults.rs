//! The fault matrix: every import the module declares × every non-Ok status (plus an unknown
//! one; for WASI imports the same numbers as errnos), on every call or only on the first call
//! after configure, through the whole lifecycle. The contract: no trap, every header callback
//! Continues, the failure is counted.

use super::checks;
use super::guest::Harness;
use super::lifecycle::{self, Run, Scenario, CONFIG};
use super::report::Outcome;
use super::state::{Fault, HostState, Phase, Scope, NOT_FOUND};

/// Every status ABI 0.2.1 defines besides Ok, and one it does not (a newer host might send it).
pub const STATUSES: [i32; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 99];

/// Failures of these cannot be counted: counting needs the metric calls and logging themselves.
const UNCOUNTABLE: [&str; 3] = ["proxy_log", "proxy_define_metric", "proxy_increment_metric"];
/// The one WASI call whose failure the module must count (it then seeds ids from the clock).
/// Other WASI failures (stdio, environment) need only be survived.
const COUNTED_WASI: &str = "random_get";
/// Has no result to fail with: it never returns.
const NO_STATUS: &str = "proc_exit";
/// With broken metrics the counters cannot add up either.
const METRICS: [&str; 2] = ["proxy_define_metric", "proxy_increment_metric"];
/// For these NotFound means "absent", an ordinary answer.
const ABSENT_IS_NORMAL: [&str; 2] = ["proxy_get_property", "proxy_get_header_map_value"];
/// Reads the plugin configuration: failing it during configure must refuse the configuration.
const CONFIG_READ: &str = "proxy_get_buffer_bytes";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Every,
    FirstAfterConfigure,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Every, Variant::FirstAfterConfigure];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Every => "(a) on every call",
            Variant::FirstAfterConfigure => "(b) on the first call after configure",
        }
    }

    fn scope(self) -> Scope {
        match self {
            Variant::Every => Scope::Always,
            Variant::FirstAfterConfigure => Scope::FirstAfterConfigure,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Case {
    pub import: String,
    pub status: i32,
    pub variant: Variant,
}

impl Case {
    pub fn label(&self) -> String {
        let v = match self.variant {
            Variant::Every => "a",
            Variant::FirstAfterConfigure => "b",
        };
        format!("{} status {} ({v})", self.import, self.status)
    }
}

pub fn cases(imports: &[String]) -> Vec<Case> {
    let mut cases = Vec::new();
    for variant in Variant::ALL {
        for import in imports.iter().filter(|i| *i != NO_STATUS) {
            for status in STATUSES {
                cases.push(Case {
                    import: import.clone(),
                    status,
                    variant,
                });
            }
        }
    }
    cases
}

pub fn run_case(h: &Harness, case: &Case) -> Outcome {
    let mut state = HostState::new(CONFIG.as_bytes());
    state.fault = Some(Fault::new(&case.import, case.status, case.variant.scope()));
    let run = lifecycle::run(h, &Scenario::standard(), state);
    judge(case, &run)
}

fn finish(run: &Run, problems: Vec<String>, outcome: Outcome) -> Outcome {
    if problems.is_empty() {
        return outcome;
    }
    let hit = run
        .state
        .fault
        .as_ref()
        .map(|f| f.hit_in.join(", "))
        .unwrap_or_default();
    Outcome::Fail(format!(
        "{} (fault fired in: {hit}; {})",
        problems.join("; "),
        checks::counters(&run.state)
    ))
}

pub fn judge(case: &Case, run: &Run) -> Outcome {
    if let Some(trap) = checks::trap(run) {
        return Outcome::Trap(trap);
    }
    let mut problems = checks::common(run);
    let Some(fault) = run.state.fault.as_ref().filter(|f| f.injected > 0) else {
        return finish(run, problems, Outcome::NotCalled);
    };
    let config_unreadable = case.import == CONFIG_READ && fault.hit_phases.contains(&Phase::Start);
    match (run.configured, config_unreadable) {
        (Some(false), true) => {
            if !checks::refusal_logged(&run.state) {
                problems.push(
                    "on_configure refused, as it must, but no log line (warn or above) names \
                     the configuration"
                        .to_string(),
                );
            }
            return finish(run, problems, Outcome::Refused);
        }
        (Some(true), true) => problems.push(format!(
            "on_configure returned true although reading the plugin configuration failed \
             (status {})",
            case.status
        )),
        (Some(false), false) => {
            problems.push(
                "on_configure returned false: only an unreadable plugin configuration may \
                 refuse to start"
                    .to_string(),
            );
            return finish(run, problems, Outcome::Ok);
        }
        _ => {}
    }
    let outcome = match judge_counting(case, &run.state) {
        Ok(o) => o,
        Err(p) => {
            problems.push(p);
            Outcome::Ok
        }
    };
    if !METRICS.contains(&case.import.as_str()) {
        problems.extend(checks::accounting(run));
    }
    finish(run, problems, outcome)
}

fn judge_counting(case: &Case, s: &HostState) -> Result<Outcome, String> {
    let import = case.import.as_str();
    let wasi = !import.starts_with("proxy_");
    if UNCOUNTABLE.contains(&import) || (wasi && import != COUNTED_WASI) {
        return Ok(Outcome::Ok);
    }
    let internal = s.counter(checks::INTERNAL_ERRORS);
    if case.status == NOT_FOUND && ABSENT_IS_NORMAL.contains(&import) {
        if internal == 0 {
            return Ok(Outcome::Ok);
        }
        return Err(format!(
            "NotFound from {import} is an ordinary \"absent\", yet it was counted \
             (internal_errors {internal})"
        ));
    }
    if import == "proxy_http_call" {
        let failed = s.counter(checks::EXPORT_FAILED);
        let dropped = s.counter(checks::SPANS_DROPPED);
        if failed >= 1 && dropped >= 1 {
            return Ok(Outcome::Counted);
        }
        return Err(format!(
            "a failed proxy_http_call must count the batch as failed and its spans as dropped \
             (export_requests_failed {failed}, spans_dropped {dropped})"
        ));
    }
    if checks::counted(s) {
        Ok(Outcome::Counted)
    } else {
        Err(
            "the failure was not counted (internal_errors, export_requests_failed and \
             spans_dropped all 0)"
                .to_string(),
        )
    }
}
