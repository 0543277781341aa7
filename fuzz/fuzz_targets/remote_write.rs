//! The remote_write decoder never panics, whatever the body, and respects its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yaffle_core::remote_write::{Limits, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_decompressed_bytes: 1 << 20, max_points: 10_000, ..Limits::default() };
    if let Ok(points) = decode(data, "fuzz", &limits) {
        assert!(points.len() <= limits.max_points);
    }
});
