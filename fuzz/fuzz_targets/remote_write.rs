//! The remote_write decoder never panics, whatever the body, and respects its limits: both the
//! snappy-framed body and the protobuf walker behind it (most random bytes are not snappy).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yaffle_core::remote_write::{Limits, decode, decode_request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        max_points: 10_000,
        max_series: 100,
        max_labels_per_series: 8,
        ..Limits::default()
    };
    if let Ok(points) = decode(data, "fuzz", &limits) {
        assert!(points.len() <= limits.max_points);
    }
    if let Ok(points) = decode_request(bytes::Bytes::copy_from_slice(data), "fuzz", &limits) {
        assert!(points.len() <= limits.max_points);
        assert!(points.iter().all(|p| p.series.tags().len() <= limits.max_labels_per_series));
    }
});
