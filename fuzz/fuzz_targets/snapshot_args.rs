//! Arbitrary JSON through the `debug/memory_snapshot` argument parser: it either accepts
//! values inside the documented bounds or names the offending argument.
#![no_main]

use heapwatch::commands::debug::{NAME_MAX_CHARS, SnapshotArgs, TOP_N_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    match SnapshotArgs::parse(value) {
        Ok(a) => {
            assert!((1..=TOP_N_MAX as usize).contains(&a.top_n));
            for name in [&a.save_as, &a.compare_with, &a.drop_baseline]
                .into_iter()
                .flatten()
            {
                let n = name.chars().count();
                assert!(n >= 1 && n <= NAME_MAX_CHARS);
                assert!(!name.chars().any(char::is_control));
            }
        }
        Err(e) => {
            assert_eq!(e.code(), "invalid_args");
            let d = e.details();
            // A rejected object names one of its own keys (or says it is not an object).
            if !keys.is_empty() {
                // Long keys are quoted shortened: their first characters are enough.
                let named = keys
                    .iter()
                    .any(|k| d.contains(&k.chars().take(40).collect::<String>()));
                assert!(named || d.contains("invalid type"), "{d}");
            }
            assert!(d.len() < 1024, "details stay short: {} bytes", d.len());
        }
    }
});
