//! Process supervision: every child the harness starts.
