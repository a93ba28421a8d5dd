//! The sampling decision and its written precedence (README "Sampling precedence"):
//!
//! 1. debug flag (`x-b3-flags: 1`, `b3: …-d`), when `trust_debug`
//! 2. force header (`x-envoy-force-trace` by default), any non-empty value
//! 3. per-request rate header (`sampling.override_header`, e.g. `l5d-sample`)
//! 4. the caller's decision (`x-b3-sampled`, `b3` state), when `trust_upstream`
//! 5. `sampling.rate`
//!
//! Rules 3 and 5 are a deterministic function of the trace id, so every hop with the same rate makes the
//! same decision for the same trace without talking to the others.

use crate::ids::{mix64, TraceId};

/// Why a request was (or was not) sampled; recorded as the `sampling.reason` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Debug,
    Force,
    RateHeader,
    Upstream,
    Rate,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Debug => "debug",
            Reason::Force => "force",
            Reason::RateHeader => "rate_header",
            Reason::Upstream => "upstream",
            Reason::Rate => "rate",
        }
    }
}

/// Everything the decision depends on, already filtered by the trust switches.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub trace_id: TraceId,
    pub debug: bool,
    pub force: bool,
    pub rate_override: Option<f64>,
    pub upstream: Option<bool>,
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    pub reason: Reason,
}

pub fn decide(inputs: &Inputs) -> Decision {
    let (sampled, reason) = if inputs.debug {
        (true, Reason::Debug)
    } else if inputs.force {
        (true, Reason::Force)
    } else if let Some(rate) = inputs.rate_override {
        (sample_at_rate(inputs.trace_id, rate), Reason::RateHeader)
    } else if let Some(sampled) = inputs.upstream {
        (sampled, Reason::Upstream)
    } else {
        (sample_at_rate(inputs.trace_id, inputs.rate), Reason::Rate)
    };
    Decision { sampled, reason }
}

/// Parses a per-request rate header value. Numbers outside 0..=1 are clamped (as Linkerd does);
/// anything that is not a finite number is rejected, and the caller counts it and ignores it.
pub fn parse_rate(value: &str) -> Option<f64> {
    let rate: f64 = value.trim().parse().ok()?;
    rate.is_finite().then(|| rate.clamp(0.0, 1.0))
}

/// True for a `rate` share of trace ids. Only the low 64 bits are used, so a 64-bit id and the same id
/// padded to 128 bits decide alike. The mix makes sequential or hand-written ids spread evenly.
pub fn sample_at_rate(trace_id: TraceId, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let unit = (mix64(trace_id.low) >> 11) as f64 / (1u64 << 53) as f64;
    unit < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            trace_id: TraceId::generate(7, 42),
            debug: false,
            force: false,
            rate_override: None,
            upstream: None,
            rate: 0.0,
        }
    }

    #[test]
    fn precedence_rows() {
        // Each row shows one rule beating everything below it.
        let rows: Vec<(&str, Inputs, bool, Reason)> = vec![
            (
                "debug beats force, rate header, upstream no, rate 0",
                Inputs {
                    debug: true,
                    force: true,
                    rate_override: Some(0.0),
                    upstream: Some(false),
                    ..base()
                },
                true,
                Reason::Debug,
            ),
            (
                "force beats rate header 0 and upstream no",
                Inputs {
                    force: true,
                    rate_override: Some(0.0),
                    upstream: Some(false),
                    ..base()
                },
                true,
                Reason::Force,
            ),
            (
                "rate header 1 beats upstream no",
                Inputs {
                    rate_override: Some(1.0),
                    upstream: Some(false),
                    ..base()
                },
                true,
                Reason::RateHeader,
            ),
            (
                "rate header 0 beats upstream yes",
                Inputs {
                    rate_override: Some(0.0),
                    upstream: Some(true),
                    rate: 1.0,
                    ..base()
                },
                false,
                Reason::RateHeader,
            ),
            (
                "upstream yes beats rate 0",
                Inputs {
                    upstream: Some(true),
                    ..base()
                },
                true,
                Reason::Upstream,
            ),
            (
                "upstream no beats rate 1",
                Inputs {
                    upstream: Some(false),
                    rate: 1.0,
                    ..base()
                },
                false,
                Reason::Upstream,
            ),
            (
                "rate 1",
                Inputs {
                    rate: 1.0,
                    ..base()
                },
                true,
                Reason::Rate,
            ),
            ("rate 0", base(), false, Reason::Rate),
        ];
        for (name, inputs, sampled, reason) in rows {
            assert_eq!(decide(&inputs), Decision { sampled, reason }, "row {name}");
        }
    }

    #[test]
    fn rate_header_rows() {
        let rows: &[(&str, &str, Option<f64>)] = &[
            ("one", "1", Some(1.0)),
            ("fraction", "0.25", Some(0.25)),
            ("spaces", " 0.5 ", Some(0.5)),
            ("above one clamps", "3", Some(1.0)),
            ("negative clamps", "-0.5", Some(0.0)),
            ("exponent", "1e-1", Some(0.1)),
            ("nan", "NaN", None),
            ("infinity", "inf", None),
            ("word", "yes", None),
            ("empty", "", None),
            ("percent", "50%", None),
        ];
        for (name, input, want) in rows {
            assert_eq!(parse_rate(input), *want, "row {name}");
        }
    }

    #[test]
    fn rate_share_is_close_and_deterministic() {
        let mut state = 1u64;
        let mut hits = 0;
        let n = 100_000;
        for _ in 0..n {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let id = TraceId::generate(0, state);
            let first = sample_at_rate(id, 0.3);
            assert_eq!(first, sample_at_rate(id, 0.3));
            hits += usize::from(first);
        }
        // Binomial sd for n=1e5, p=0.3 is ~145; 6 sd.
        assert!((29_130..=30_870).contains(&hits), "hits {hits}");
    }

    #[test]
    fn sequential_ids_spread() {
        let hits = (1..=10_000u64)
            .filter(|i| sample_at_rate(TraceId::generate(0, *i), 0.5))
            .count();
        assert!((4_700..=5_300).contains(&hits), "hits {hits}");
    }

    #[test]
    fn wide_and_narrow_ids_agree() {
        let narrow = TraceId {
            high: 0,
            low: 0xa3ce_929d_0e0e_4736,
            wide: false,
        };
        let wide = TraceId {
            high: 0x463a_c35c_9f64_13ad,
            ..narrow
        };
        for rate in [0.1, 0.5, 0.9] {
            assert_eq!(sample_at_rate(narrow, rate), sample_at_rate(wide, rate));
        }
    }
}
