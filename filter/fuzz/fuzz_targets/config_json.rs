//! The plugin configuration: any bytes give a configuration or an error that names where.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = meshtrace::config::parse(data) {
        assert!(
            !e.reason.is_empty(),
            "an error without a reason for {data:?}"
        );
    }
});
