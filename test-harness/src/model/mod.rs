//! The scenario model: what a scenario says (schema, validation), how values are matched, what is
//! expected of what the run observed, and how spans are normalised and drawn. Pure: no I/O, no
//! processes, unit-tested without Envoy.

pub mod expect;
pub mod matcher;
pub mod normalize;
pub mod observed;
pub mod scenario;
pub mod spans;
