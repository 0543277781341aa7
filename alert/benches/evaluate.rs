//! Evaluation cost: 10 000 series x 100 alerting rules, every rule reading every series (the worst
//! case: a rule set over one large metric). Run: `cargo bench -p yaffle-alert --bench evaluate`.
//!
//! - `round`: a scrape's worth of points (one per series, 10 s of event time on) is ingested and the
//!   100 rules they touch are evaluated, i.e. 1 000 000 (series, rule) evaluations;
//! - `ingest_only`: the same points without evaluation, to separate the two costs.
//!
//! Every series holds 5 minutes of 10-second samples, which `[5m]` ranges read in full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use yaffle_alert::{AlertConfig, Evaluator, Metrics, RuleSet};
use yaffle_core::{FieldValue, Point, SeriesKey};

const SERIES: usize = 10_000;
const RULES: usize = 100;
const STEP_NS: i64 = 10_000_000_000;
/// Samples kept per series (5 minutes of steps); older ones are expired between measured rounds.
const HISTORY: usize = 30;

fn rules() -> String {
    let mut yaml = String::from("groups:\n  - name: bench\n    interval: 10s\n    rules:\n");
    for i in 0..RULES {
        let t = 90.0 + (i / 5) as f64 * 0.1;
        let expr = match i % 5 {
            0 => format!("node_load > {t}"),
            1 => format!("avg_over_time(node_load[5m]) > {t}"),
            2 => format!("sum by (region) (rate(node_load[5m])) > {t}"),
            3 => format!("max by (host) (node_load) > {t} unless node_load < 0"),
            _ => format!("count by (region) (node_load > {t}) > 500"),
        };
        yaml.push_str(&format!("      - alert: Rule{i}\n        expr: {expr}\n        for: 1m\n"));
    }
    yaml
}

struct Setup {
    evaluator: Evaluator,
    keys: Vec<Arc<SeriesKey>>,
    step: i64,
    base: i64,
}

impl Setup {
    fn new() -> Self {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        set.add_file("bench.yml".as_ref(), &rules(), Duration::from_secs(60), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.rule_count(), RULES);
        // A tick far longer than the run: the clock only moves with the points.
        let config = AlertConfig { tick: Duration::from_secs(3600), ..AlertConfig::default() };
        let evaluator = Evaluator::new(Arc::new(set), &config, Arc::new(Metrics::new(&mut Registry::default())));
        let keys = (0..SERIES)
            .map(|h| {
                Arc::new(SeriesKey::new(
                    "bench",
                    "node",
                    vec![("host".into(), format!("host_{h}")), ("region".into(), format!("region_{}", h % 10))],
                ))
            })
            .collect();
        let base = yaffle_alert::evaluator::wall_ns() - 30 * 86_400_000_000_000;
        let mut s = Self { evaluator, keys, step: 0, base };
        for _ in 0..HISTORY {
            let points = s.next_points();
            s.evaluator.ingest_and_evaluate(points);
        }
        s
    }

    /// One point per series, one step on.
    fn next_points(&mut self) -> Vec<Point> {
        self.step += 1;
        let t = self.base + self.step * STEP_NS;
        self.keys
            .iter()
            .enumerate()
            .map(|(h, k)| {
                let v = ((h * 7 + self.step as usize) % 100) as f64;
                Point::new(Arc::clone(k), vec![("load".into(), FieldValue::Float(v))], t)
            })
            .collect()
    }

    /// Runs `iters` measured steps of `f`, expiring old samples (unmeasured) as a live evaluator's
    /// tick would.
    fn measure(&mut self, iters: u64, mut f: impl FnMut(&mut Evaluator, Vec<Point>)) -> Duration {
        let mut total = Duration::ZERO;
        for i in 0..iters {
            let points = self.next_points();
            let started = Instant::now();
            f(&mut self.evaluator, points);
            total += started.elapsed();
            if i % 10 == 9 {
                self.evaluator.tick();
            }
        }
        total
    }
}

fn evaluate(c: &mut Criterion) {
    let mut g = c.benchmark_group("evaluate_10k_series_100_rules");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    let mut setup = Setup::new();
    g.throughput(Throughput::Elements((SERIES * RULES) as u64));
    g.bench_function("round", |b| {
        b.iter_custom(|iters| {
            setup.measure(iters, |e, points| {
                std::hint::black_box(e.ingest_and_evaluate(points));
            })
        })
    });
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("ingest_only", |b| b.iter_custom(|iters| setup.measure(iters, |e, points| e.ingest(&points))));
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
