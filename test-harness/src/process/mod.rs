//! Process supervision: every child the harness starts (func-e/Envoy, the real collectors,
//! Chromium, crane, tar, `envoy --mode validate`, python) goes through [`Supervised`] or
//! [`output`]. Each child leads a process group of its own, registered with the harness's one
//! interrupt handler (see `registry.rs` for its design), and is stopped as a group: SIGTERM,
//! a bounded wait, SIGKILL, also when the direct child (func-e) is gone but its group (Envoy)
//! lives on. [`Daemon`] adds a log file and a readiness wait for long-running servers (the
//! mesh's, the bench's Envoys). [`ports`] is the one allocator of loopback ports for those children.

mod child;
mod daemon;
mod group;
pub mod ports;
mod registry;

pub use child::{output, output_showing_stderr, Supervised};
pub use daemon::{tail, Daemon};
pub use group::{group_alive, signal_group};
pub use registry::{hold_until_interrupt, install_interrupt_handler};
