//! The counters meshtrace reports. Names are what `/stats` shows after Envoy's `wasmcustom.` prefix.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    SpansStarted,
    SpansSampled,
    SpansNotSampled,
    SpansRecorded,
    SpansExported,
    SpansDropped,
    ExportRequestsOk,
    ExportRequestsFailed,
    ExportFailedNoResponse,
    ExportFailedStatus,
    ExportFailedNotSent,
    ExportRetries,
    ExportGaveUp,
    SpansDroppedQueueFull,
    SpansDroppedExportFailed,
    SpansDroppedShutdown,
    InvalidContext,
    InvalidRateHeader,
    SamplingDebug,
    SamplingForce,
    SamplingRateHeader,
    SamplingUpstream,
    SamplingRate,
    InternalErrors,
}

impl Counter {
    pub const ALL: [Counter; 24] = [
        Counter::SpansStarted,
        Counter::SpansSampled,
        Counter::SpansNotSampled,
        Counter::SpansRecorded,
        Counter::SpansExported,
        Counter::SpansDropped,
        Counter::ExportRequestsOk,
        Counter::ExportRequestsFailed,
        Counter::ExportFailedNoResponse,
        Counter::ExportFailedStatus,
        Counter::ExportFailedNotSent,
        Counter::ExportRetries,
        Counter::ExportGaveUp,
        Counter::SpansDroppedQueueFull,
        Counter::SpansDroppedExportFailed,
        Counter::SpansDroppedShutdown,
        Counter::InvalidContext,
        Counter::InvalidRateHeader,
        Counter::SamplingDebug,
        Counter::SamplingForce,
        Counter::SamplingRateHeader,
        Counter::SamplingUpstream,
        Counter::SamplingRate,
        Counter::InternalErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::SpansStarted => "meshtrace_spans_started",
            Counter::SpansSampled => "meshtrace_spans_sampled",
            Counter::SpansNotSampled => "meshtrace_spans_not_sampled",
            Counter::SpansRecorded => "meshtrace_spans_recorded",
            Counter::SpansExported => "meshtrace_spans_exported",
            Counter::SpansDropped => "meshtrace_spans_dropped",
            Counter::ExportRequestsOk => "meshtrace_export_requests_ok",
            Counter::ExportRequestsFailed => "meshtrace_export_requests_failed",
            Counter::ExportFailedNoResponse => "meshtrace_export_failed_no_response",
            Counter::ExportFailedStatus => "meshtrace_export_failed_status",
            Counter::ExportFailedNotSent => "meshtrace_export_failed_not_sent",
            Counter::ExportRetries => "meshtrace_export_retries",
            Counter::ExportGaveUp => "meshtrace_export_gave_up",
            Counter::SpansDroppedQueueFull => "meshtrace_spans_dropped_queue_full",
            Counter::SpansDroppedExportFailed => "meshtrace_spans_dropped_export_failed",
            Counter::SpansDroppedShutdown => "meshtrace_spans_dropped_shutdown",
            Counter::InvalidContext => "meshtrace_invalid_context",
            Counter::InvalidRateHeader => "meshtrace_invalid_rate_header",
            Counter::SamplingDebug => "meshtrace_sampling_debug",
            Counter::SamplingForce => "meshtrace_sampling_force",
            Counter::SamplingRateHeader => "meshtrace_sampling_rate_header",
            Counter::SamplingUpstream => "meshtrace_sampling_upstream",
            Counter::SamplingRate => "meshtrace_sampling_rate",
            Counter::InternalErrors => "meshtrace_internal_errors",
        }
    }

    /// Position in [`Counter::ALL`], for id tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("meshtrace_")));
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
