//! Encoders from the span model to collector wire formats.

pub mod otlp;
pub mod scheduler;
pub mod zipkin;
