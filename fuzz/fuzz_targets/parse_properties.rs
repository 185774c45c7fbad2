//! Any bytes, parsed as `serving.properties`: an error that names the
//! problem, or properties that hold the parser's own promises.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mme_package::properties::{MAX_PROPERTIES_BYTES, Properties};

fuzz_target!(|data: &[u8]| {
    let Ok(properties) = Properties::parse(data) else {
        return;
    };
    assert!(data.len() <= MAX_PROPERTIES_BYTES);
    if let Some(max) = properties.max_workers {
        assert!(properties.min_workers <= max, "{properties:?}");
    }
    assert!(properties.batch_size >= 1 && properties.job_queue_size >= 1);
    assert!(!properties.request_timeout.is_zero());
    // Parsing is a function of the bytes: the same file, the same answer.
    assert_eq!(Properties::parse(data).ok(), Some(properties.clone()));
    // No override is a no-op, as the query form of `POST /models` relies on.
    assert_eq!(properties.overridden(&[]).ok(), Some(properties));
});
