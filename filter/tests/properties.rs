//! Property tests: any context meshtrace writes, in any format, reads back as the same context.
#![cfg(not(target_arch = "wasm32"))] // proptest's runner wants a real OS; the table tests run there
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace::ids::{SpanId, TraceId};
use meshtrace::propagation::b3::{self, B3Headers};
use meshtrace::propagation::{w3c, Format, Formats, HeaderEdit, Outgoing};
use meshtrace::sampling;
use proptest::prelude::*;

fn trace_id() -> impl Strategy<Value = TraceId> {
    (any::<u64>(), any::<u64>(), any::<bool>())
        .prop_filter("not all zero", |(h, l, w)| {
            if *w {
                *h != 0 || *l != 0
            } else {
                *l != 0
            }
        })
        .prop_map(|(high, low, wide)| TraceId {
            high: if wide { high } else { 0 },
            low,
            wide,
        })
}

fn span_id() -> impl Strategy<Value = SpanId> {
    (1..=u64::MAX).prop_map(SpanId)
}

fn outgoing() -> impl Strategy<Value = Outgoing> {
    (
        trace_id(),
        span_id(),
        proptest::option::of(span_id()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(trace_id, span_id, parent_id, sampled, debug)| Outgoing {
            trace_id,
            span_id,
            parent_id,
            sampled,
            debug,
        })
}

/// The headers a request would carry after these edits.
fn headers(edits: &[HeaderEdit]) -> Vec<(String, String)> {
    edits
        .iter()
        .filter_map(|e| Some((e.name.to_string(), e.value.clone()?)))
        .collect()
}

fn extract(hs: &[(String, String)], format: Format) -> b3::Extracted {
    let mut seen = B3Headers::default();
    for (k, v) in hs {
        seen.observe(k, v);
    }
    b3::extract(&seen, Formats::of(&[format]))
}

proptest! {
    #[test]
    fn b3_multi_and_single_round_trip(out in outgoing(), single in any::<bool>()) {
        let format = if single { Format::B3Single } else { Format::B3Multi };
        let mut edits = Vec::new();
        b3::inject(&out, Formats::of(&[format]), &B3Headers::default(), &mut edits);
        let got = extract(&headers(&edits), format);
        prop_assert_eq!(got.parent, Some((out.trace_id, out.span_id)));
        prop_assert_eq!(got.sampled, Some(out.sampled || out.debug));
        prop_assert_eq!(got.debug, out.debug);
        prop_assert_eq!(got.malformed, None);
    }

    #[test]
    fn traceparent_round_trips(out in outgoing()) {
        let v = w3c::format(out.trace_id, out.span_id, out.sampled);
        let p = w3c::parse(&v).expect("meshtrace's own traceparent parses");
        prop_assert_eq!((p.trace_id.high, p.trace_id.low), (out.trace_id.high, out.trace_id.low));
        prop_assert_eq!(p.span_id, out.span_id);
        prop_assert_eq!(p.sampled, out.sampled);
    }

    #[test]
    fn ids_print_and_parse_back(t in trace_id(), s in span_id()) {
        prop_assert_eq!(TraceId::parse(&t.to_string()), Some(t));
        prop_assert_eq!(SpanId::parse(&s.to_string()), Some(s));
    }

    /// Any rate written in plain decimal reads back as itself; anything read is within 0..=1.
    #[test]
    fn rates_round_trip(r in 0.0f64..=1.0, junk in ".*") {
        prop_assert_eq!(sampling::parse_rate(&r.to_string()), Some(r));
        if let Some(x) = sampling::parse_rate(&junk) {
            prop_assert!(x.is_finite() && (0.0..=1.0).contains(&x));
        }
    }
}
