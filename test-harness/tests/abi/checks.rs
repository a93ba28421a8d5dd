//! Assertions shared by every case: what must hold whatever the fault.

use super::lifecycle::Run;
use super::state::HostState;

pub const INTERNAL_ERRORS: &str = "meshtrace_internal_errors";
pub const SPANS_RECORDED: &str = "meshtrace_spans_recorded";
pub const SPANS_EXPORTED: &str = "meshtrace_spans_exported";
pub const SPANS_DROPPED: &str = "meshtrace_spans_dropped";
pub const EXPORT_OK: &str = "meshtrace_export_requests_ok";
pub const EXPORT_FAILED: &str = "meshtrace_export_requests_failed";
pub const INVALID_CONTEXT: &str = "meshtrace_invalid_context";

/// The trap, where it happened, and the module's own last words (panic messages are logged at
/// critical before the abort).
pub fn trap(run: &Run) -> Option<String> {
    let t = run.trap.as_ref()?;
    let logs = run.state.severe_logs();
    let logs = if logs.is_empty() {
        String::new()
    } else {
        format!("\n      module log: {logs}")
    };
    Some(format!("trap in {}: {}{logs}", t.callback, t.message))
}

/// Problems any run can have besides a trap.
pub fn common(run: &Run) -> Vec<String> {
    let mut problems = run.bad_actions();
    problems.extend(run.state.violations.iter().cloned());
    if run.vm_started == Some(false) {
        problems.push("proxy_on_vm_start returned false".to_string());
    }
    problems
}

/// Every recorded span ends up exported or dropped once the root is done, and the root lets
/// Envoy finish (on_done true, or proxy_done called later).
pub fn accounting(run: &Run) -> Option<String> {
    let s = &run.state;
    let (recorded, exported, dropped) = (
        s.counter(SPANS_RECORDED),
        s.counter(SPANS_EXPORTED),
        s.counter(SPANS_DROPPED),
    );
    if run.root_done == Some(false) && !s.done_called {
        return Some(
            "root proxy_on_done returned false and proxy_done was never called".to_string(),
        );
    }
    (recorded != exported + dropped).then(|| {
        format!(
            "after the root's on_done spans_recorded {recorded} != spans_exported {exported} + \
             spans_dropped {dropped}"
        )
    })
}

/// A refused configuration must say why, at warn or above, naming the configuration.
pub fn refusal_logged(state: &HostState) -> bool {
    state
        .delivered_logs(3)
        .any(|l| l.text.to_ascii_lowercase().contains("config"))
}

pub fn counters(s: &HostState) -> String {
    format!(
        "recorded {}, exported {}, dropped {}, export ok {}, export failed {}, internal errors {}",
        s.counter(SPANS_RECORDED),
        s.counter(SPANS_EXPORTED),
        s.counter(SPANS_DROPPED),
        s.counter(EXPORT_OK),
        s.counter(EXPORT_FAILED),
        s.counter(INTERNAL_ERRORS)
    )
}

/// The failure left a trace in the counters: an internal error, or a failed/dropped export.
pub fn counted(s: &HostState) -> bool {
    s.counter(INTERNAL_ERRORS) + s.counter(EXPORT_FAILED) + s.counter(SPANS_DROPPED) > 0
}
