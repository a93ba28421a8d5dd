//! Trace-context formats: reading the caller's context and writing ours upstream.

pub mod b3;
pub mod w3c;

use std::borrow::Cow;

use crate::ids::{SpanId, TraceId};

/// A wire format meshtrace reads and writes (named in `propagation.extract`/`inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    B3Multi,
    B3Single,
    W3c,
}

/// A small set of formats (a bit set, so the request path never allocates for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Formats(u8);

impl Formats {
    pub fn of(formats: &[Format]) -> Formats {
        Formats(formats.iter().fold(0, |bits, f| bits | Self::bit(*f)))
    }

    pub fn contains(self, f: Format) -> bool {
        self.0 & Self::bit(f) != 0
    }

    fn bit(f: Format) -> u8 {
        match f {
            Format::B3Multi => 1,
            Format::B3Single => 2,
            Format::W3c => 4,
        }
    }
}

/// The context this hop sends upstream: our span is the caller's child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub sampled: bool,
    pub debug: bool,
}

/// One change to the request headers: set `name` to `value`, or remove it when `value` is None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    pub name: Cow<'static, str>,
    pub value: Option<String>,
}

impl HeaderEdit {
    pub fn set(name: &'static str, value: String) -> HeaderEdit {
        HeaderEdit {
            name: Cow::Borrowed(name),
            value: Some(value),
        }
    }

    pub fn remove(name: &'static str) -> HeaderEdit {
        HeaderEdit {
            name: Cow::Borrowed(name),
            value: None,
        }
    }
}
