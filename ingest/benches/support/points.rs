//! What the ingest benchmarks share: the TSBS cpu-only points they send.

use std::sync::Arc;

use yaffle_core::tsbs::FIELDS;
use yaffle_core::{FieldValue, Point, SeriesKey};

/// 1 000 hosts x 10 float fields per point.
pub(crate) const HOSTS: usize = 1_000;
/// 10-second steps of every host; `YAFFLE_BENCH_STEPS` overrides.
pub(crate) const STEPS: usize = 30;

/// Every host's point of every step.
pub(crate) fn points() -> Vec<Point> {
    let keys: Vec<Arc<SeriesKey>> = (0..HOSTS)
        .map(|h| {
            Arc::new(SeriesKey::new(
                "bench",
                "cpu",
                vec![
                    ("hostname".into(), format!("host_{h}")),
                    ("region".into(), format!("region_{}", h % 7)),
                    ("datacenter".into(), format!("dc_{}", h % 31)),
                ],
            ))
        })
        .collect();
    let steps = std::env::var("YAFFLE_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(STEPS);
    let mut out = Vec::with_capacity(HOSTS * steps);
    for step in 0..steps {
        for (h, key) in keys.iter().enumerate() {
            let fields = FIELDS
                .iter()
                .enumerate()
                .map(|(f, name)| (name.to_string(), FieldValue::Float(((h * 31 + f * 7 + step) % 1000) as f64 / 10.0)))
                .collect();
            out.push(Point::new(Arc::clone(key), fields, 1_700_000_000_000_000_000 + step as i64 * 10_000_000_000));
        }
    }
    out
}
