//! Parsing and codec benchmarks on TSBS cpu-only shaped data.
//!
//! `line_protocol/*` parses the same bytes with Yaffle's parser and with the `influxdb-line-protocol`
//! crate in one run, so their ratio is measured side by side. Run: `cargo bench -p yaffle-core`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use yaffle_core::line_protocol::{Line, Parser, Precision, SeriesCache};
use yaffle_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use yaffle_core::tsbs::{Scenario, generate};
use yaffle_core::{Batch, FieldValue, Point, SeriesKey};

struct LpScenario {
    name: &'static str,
    text: String,
}

fn lp_scenarios() -> Vec<LpScenario> {
    let base = Scenario { hosts: 100, steps: 100, start_ns: 1_451_606_400_000_000_000, integer_fields: false };
    vec![
        LpScenario { name: "tsbs_cpu_float", text: generate(&base) },
        LpScenario { name: "tsbs_cpu_integer", text: generate(&Scenario { integer_fields: true, ..base }) },
    ]
}

fn line_protocol(c: &mut Criterion) {
    for s in lp_scenarios() {
        let mut g = c.benchmark_group(format!("line_protocol/{}", s.name));
        g.throughput(Throughput::Bytes(s.text.len() as u64));
        g.bench_function("yaffle_tokenize", |b| {
            let mut line = Line::default();
            b.iter(|| {
                let mut parser = Parser::new(s.text.as_bytes(), Precision::Nanoseconds);
                let mut n = 0usize;
                while let Some(r) = parser.next_into(&mut line) {
                    r.unwrap();
                    n += line.fields.len();
                }
                black_box(n)
            })
        });
        g.bench_function("yaffle_to_points", |b| {
            let mut line = Line::default();
            b.iter(|| {
                let mut parser = Parser::new(s.text.as_bytes(), Precision::Nanoseconds);
                let mut points = Vec::with_capacity(10_000);
                while let Some(r) = parser.next_into(&mut line) {
                    r.unwrap();
                    points.push(line.to_point("bench", 0).unwrap());
                }
                black_box(points)
            })
        });
        g.bench_function("yaffle_to_points_cached", |b| {
            let mut line = Line::default();
            b.iter(|| {
                let mut parser = Parser::new(s.text.as_bytes(), Precision::Nanoseconds);
                let mut series = SeriesCache::new("bench");
                let mut points = Vec::with_capacity(10_000);
                while let Some(r) = parser.next_into(&mut line) {
                    r.unwrap();
                    points.push(line.to_point_cached(&mut series, 0).unwrap());
                }
                black_box(points)
            })
        });
        g.bench_function("influxdb_line_protocol_crate", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for line in influxdb_line_protocol::parse_lines(&s.text) {
                    n += line.unwrap().field_set.len();
                }
                black_box(n)
            })
        });
        g.finish();
    }
}

fn sample_points(series: usize, per_series: usize) -> Vec<Point> {
    let mut points = Vec::with_capacity(series * per_series);
    for s in 0..series {
        let key = Arc::new(SeriesKey::new(
            "bench",
            "cpu",
            vec![("host".into(), format!("host_{s}")), ("region".into(), "eu-central-1".into())],
        ));
        for i in 0..per_series {
            let fields = vec![
                ("usage_user".to_string(), FieldValue::Float(i as f64 * 0.5)),
                ("n".to_string(), FieldValue::Integer(i as i64)),
            ];
            points.push(Point::new(Arc::clone(&key), fields, 1_700_000_000_000_000_000 + i as i64 * 10_000_000_000));
        }
    }
    points
}

fn batch_codec(c: &mut Criterion) {
    let batch = Batch::new(sample_points(1000, 10));
    let encoded = batch.encode();
    let mut g = c.benchmark_group("batch_codec");
    g.throughput(Throughput::Elements(batch.points.len() as u64));
    g.bench_function("encode_10k_points", |b| b.iter(|| black_box(batch.encode())));
    g.bench_function("decode_10k_points", |b| b.iter(|| black_box(Batch::decode(&encoded).unwrap())));
    g.finish();
}

fn remote_write_decode(c: &mut Criterion) {
    let request = WriteRequest {
        timeseries: (0..2000)
            .map(|s| TimeSeries {
                labels: vec![
                    Label { name: "__name__".into(), value: "http_requests_total".into() },
                    Label { name: "instance".into(), value: format!("10.0.{}.{}:9100", s / 250, s % 250).into() },
                    Label { name: "job".into(), value: "node".into() },
                    Label { name: "code".into(), value: "200".into() },
                ],
                samples: (0..5)
                    .map(|i| Sample { value: i as f64, timestamp: 1_700_000_000_000 + i * 15_000 })
                    .collect(),
            })
            .collect(),
    };
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap();
    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("decode_10k_samples", |b| {
        b.iter(|| black_box(remote_write::decode(&body, "prometheus", &remote_write::Limits::default()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, line_protocol, batch_codec, remote_write_decode);
criterion_main!(benches);
