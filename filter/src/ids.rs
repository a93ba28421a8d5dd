//! Trace and span identifiers in the B3 wire form: lower-case hex, fixed width, never all zero.

use std::fmt;

/// A 64- or 128-bit trace id. The width is kept because a 64-bit id received from upstream must be
/// forwarded as 64 bits: rewriting it to 32 hex characters would split the trace at collectors that
/// compare ids as strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId {
    pub high: u64,
    pub low: u64,
    pub wide: bool,
}

/// A 64-bit span id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl TraceId {
    /// Parses 16 or 32 lower-hex characters; all-zero is invalid.
    pub fn parse(text: &str) -> Option<TraceId> {
        let id = match text.len() {
            16 => TraceId {
                high: 0,
                low: parse_hex64(text.as_bytes())?,
                wide: false,
            },
            32 => TraceId {
                high: parse_hex64(&text.as_bytes()[..16])?,
                low: parse_hex64(&text.as_bytes()[16..])?,
                wide: true,
            },
            _ => return None,
        };
        (id.high != 0 || id.low != 0).then_some(id)
    }

    /// A new 128-bit id from two random words; zero words are replaced so the id is never all-zero.
    pub fn generate(high: u64, low: u64) -> TraceId {
        TraceId {
            high,
            low: if low == 0 { 1 } else { low },
            wide: true,
        }
    }
}

impl SpanId {
    /// Parses exactly 16 lower-hex characters; all-zero is invalid.
    pub fn parse(text: &str) -> Option<SpanId> {
        if text.len() != 16 {
            return None;
        }
        parse_hex64(text.as_bytes()).filter(|v| *v != 0).map(SpanId)
    }

    pub fn generate(random: u64) -> SpanId {
        SpanId(if random == 0 { 1 } else { random })
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wide {
            write!(f, "{:016x}{:016x}", self.high, self.low)
        } else {
            write!(f, "{:016x}", self.low)
        }
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// splitmix64's finaliser: a bijection with good avalanche. It spreads trace ids for the rate decision
/// and turns a counter into span ids.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Upper-case hex is rejected on purpose: the B3 spec says lower-hex and Zipkin refuses upper-case ids,
/// so accepting them would only move the failure to the collector.
fn parse_hex64(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 16 {
        return None;
    }
    let mut value = 0u64;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_rows() {
        let rows: &[(&str, &str, Option<&str>)] = &[
            (
                "128-bit",
                "463ac35c9f6413ad48485a3953bb6124",
                Some("463ac35c9f6413ad48485a3953bb6124"),
            ),
            (
                "64-bit stays 64-bit",
                "a3ce929d0e0e4736",
                Some("a3ce929d0e0e4736"),
            ),
            (
                "128-bit with zero high half",
                "0000000000000000a3ce929d0e0e4736",
                Some("0000000000000000a3ce929d0e0e4736"),
            ),
            ("upper case", "463AC35C9F6413AD48485A3953BB6124", None),
            ("all zero 64", "0000000000000000", None),
            ("all zero 128", "00000000000000000000000000000000", None),
            ("15 chars", "a3ce929d0e0e473", None),
            ("17 chars", "a3ce929d0e0e47361", None),
            ("20 chars", "a3ce929d0e0e47361234", None),
            ("non-hex", "a3ce929d0e0e473g", None),
            ("0x prefix", "0xa3ce929d0e0e47", None),
            ("empty", "", None),
            ("multibyte", "a3ce929d0e0e47é", None),
        ];
        for (name, input, want) in rows {
            let got = TraceId::parse(input).map(|t| t.to_string());
            assert_eq!(got.as_deref(), *want, "row {name}");
        }
    }

    #[test]
    fn span_id_rows() {
        let rows: &[(&str, &str, bool)] = &[
            ("valid", "e457b5a2e4d86bd1", true),
            ("upper", "E457B5A2E4D86BD1", false),
            ("all zero", "0000000000000000", false),
            ("32 chars", "463ac35c9f6413ad48485a3953bb6124", false),
            ("short", "e457b5a2e4d86bd", false),
            ("space", " e457b5a2e4d86bd", false),
        ];
        for (name, input, ok) in rows {
            assert_eq!(SpanId::parse(input).is_some(), *ok, "row {name}");
        }
    }

    #[test]
    fn generated_ids_are_never_zero() {
        assert_eq!(TraceId::generate(0, 0).to_string().len(), 32);
        assert_ne!(TraceId::generate(0, 0).low, 0);
        assert_eq!(SpanId::generate(0), SpanId(1));
    }
}
