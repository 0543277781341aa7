//! The downsampling engine on one core: values per second and state bytes per series at 100K and 1M
//! series, sketch off and on, live (emitting) and replaying (rebuilding windows, as after a crash: the
//! partition is assigned with the watermark its previous owner emitted through, the last step's, as
//! recorded with that owner's commit, so values whose finer windows it emitted go straight to the
//! coarser windows still open).
//!
//! `cargo bench -p yaffle-downsample --bench worker [-- --quick] [-- "1000000 off live"]` (harness-less:
//! whole runs, not micro-samples; `--quick` runs 8 steps, `--steps=N` N steps (370 close a 1h window),
//! other arguments pick cases by substring).
//! Each series gets one float value per 10 s step, in batches of 10 000 points as ingest's Kafka sink
//! sends them (one message per partition per step); 45 steps (7.5 min of event time) close every 1m
//! and 5m window at least once. Rows finished are dropped (the store's time is not the engine's). Bytes
//! are live heap bytes counted by this binary's allocator, after the engine is built and before the
//! batches of the next step are decoded; the figure is the peak over steps.

// The counting global allocator below is the one way to see the engine's heap from inside.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use yaffle_core::{Batch, FieldValue, Point, SeriesKey};
use yaffle_downsample::{Engine, Metrics, SketchConfig, WindowConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same pointer and layout the caller allocated with.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same pointer and layout the caller allocated with.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const S: i64 = 1_000_000_000;
const BATCH: usize = 10_000;

/// Prometheus-like series: 100 metric names x `n / 100` instances, a job and a region tag.
fn series(n: usize) -> Vec<Arc<SeriesKey>> {
    (0..n)
        .map(|i| {
            let tags = vec![
                (
                    "instance".to_string(),
                    format!("10.{}.{}.{}:9100", i / 100 / 65536, (i / 100 / 256) % 256, i / 100 % 256),
                ),
                ("job".to_string(), format!("job{}", i / 100 % 10)),
                ("region".to_string(), format!("r{}", i / 100 % 4)),
            ];
            Arc::new(SeriesKey::new("bench", format!("metric_{}", i % 100), tags))
        })
        .collect()
}

/// One step's batches, encoded.
fn step(keys: &[Arc<SeriesKey>], t: i64, step: i64) -> Vec<Vec<u8>> {
    keys.chunks(BATCH)
        .map(|chunk| {
            let points = chunk
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let v = ((step * 31 + i as i64 * 17) % 1000) as f64 * 0.25;
                    Point::new(
                        Arc::clone(k),
                        vec![("value".into(), FieldValue::Float(v))],
                        t + (i as i64 % 10) * 1_000_000,
                    )
                })
                .collect();
            Batch::new(points).encode()
        })
        .collect()
}

struct Run {
    values_per_s: f64,
    bytes_per_series: f64,
}

fn run(n: usize, sketch: bool, replaying: bool, steps: i64) -> Run {
    let keys = series(n);
    let config = WindowConfig { sketch: sketch.then(SketchConfig::default), ..WindowConfig::default() };
    let t0 = 1_767_225_600 * S; // 2026-01-01T00:00:00Z, aligned to the hour
    let base = LIVE.load(Ordering::Relaxed);
    let mut engine = Engine::new(config, Arc::new(Metrics::default()));
    // A rebuild replays up to the previous owner's commit, which recorded the watermark it had emitted
    // through: the run's last step.
    engine.assign(0, replaying.then_some(t0 + (steps - 1) * 10 * S));
    let (mut busy, mut values, mut peak) = (Duration::ZERO, 0u64, 0isize);
    for s in 0..steps {
        let batches = step(&keys, t0 + s * 10 * S, s);
        let start = Instant::now();
        for b in &batches {
            values += engine.add(0, b, i64::MAX, replaying).expect("decodes") as u64;
        }
        engine.retain_pending(|_| false);
        busy += start.elapsed();
        drop(batches);
        peak = peak.max(LIVE.load(Ordering::Relaxed) - base);
    }
    Run { values_per_s: values as f64 / busy.as_secs_f64(), bytes_per_series: peak as f64 / n as f64 }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = match args.iter().find_map(|a| a.strip_prefix("--steps=")) {
        Some(n) => n.parse().expect("--steps=N takes a number of 10 s steps"),
        None if args.iter().any(|a| a == "--quick") => 8,
        None => 45,
    };
    // Any other argument picks the cases whose "series sketch mode" contains it ("1000000 off live").
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    println!("| series | sketch | mode | values/s (1 core) | state bytes per series (peak) |");
    println!("| --- | --- | --- | --- | --- |");
    for n in [100_000, 1_000_000] {
        for (sketch, replaying) in [(false, false), (false, true), (true, false), (true, true)] {
            let (sk, mode) = (if sketch { "on" } else { "off" }, if replaying { "replay" } else { "live" });
            let case = format!("{n} {sk} {mode}");
            if !filters.is_empty() && !filters.iter().any(|f| case.contains(f.as_str())) {
                continue;
            }
            let r = run(n, sketch, replaying, steps);
            println!("| {n} | {sk} | {mode} | {:.2} M | {:.0} |", r.values_per_s / 1e6, r.bytes_per_series);
        }
    }
}
