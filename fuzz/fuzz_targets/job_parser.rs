//! The job parser on arbitrary bytes: JSON syntax, then the schema (types, ranges, unknown
//! fields, paths), then the one-line error a user sees. Nothing may panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/fuzz/job.json");
    let Ok(value) = vidax::job::parse_json(data, file) else {
        return;
    };
    match vidax::job::from_value(value, Path::new("/fuzz")) {
        Ok(job) => {
            // The effective job must serialise again.
            let _ = serde_json::to_string(&job).expect("effective job serialises");
        }
        Err(problems) => {
            let e = vidax::job::problems_error(file, &problems);
            assert!(!e.to_string().is_empty());
        }
    }
});
