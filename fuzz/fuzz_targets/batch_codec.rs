//! Decoding arbitrary bytes never panics, and whatever decodes re-encodes to something equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yaffle_core::Batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = Batch::decode(data) {
        let again = Batch::decode(&batch.encode()).expect("re-encoded batch decodes");
        assert_eq!(again.points.len(), batch.points.len());
    }
});
