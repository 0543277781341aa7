//! The parser never panics or loops, and every point it accepts survives the batch codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yaffle_core::Batch;
use yaffle_core::line_protocol::{Line, Parser, Precision};

fuzz_target!(|data: &[u8]| {
    let mut parser = Parser::new(data, Precision::Nanoseconds).with_max_line_bytes(4096);
    let mut line = Line::default();
    let mut points = Vec::new();
    while let Some(r) = parser.next_into(&mut line) {
        if r.is_ok() {
            if let Ok(p) = line.to_point("fuzz", 0) {
                points.push(p);
            }
        }
    }
    let batch = Batch::new(points);
    let decoded = Batch::decode(&batch.encode()).expect("encoded batch decodes");
    assert_eq!(decoded.points.len(), batch.points.len());
});
