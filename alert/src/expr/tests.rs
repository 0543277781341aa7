use std::sync::Arc;

use yaffle_core::point::FieldValue;
use yaffle_core::{Point, SeriesKey};

use super::*;
use crate::series::{IngestStats, STALE_NAN_BITS, SeriesStore};

const S: i64 = 1_000_000_000;
const LOOKBACK: i64 = 300 * S;

fn point(name: &str, tags: &[(&str, &str)], t: i64, v: f64) -> Point {
    let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Point::new(Arc::new(SeriesKey::new("db", name, tags)), vec![("value".into(), FieldValue::Float(v))], t)
}

/// Compiles `query`, loads `points` and evaluates at `at`; the result as sorted `labels value` lines.
fn eval_at(query: &str, points: &[Point], at: i64) -> Result<Vec<String>, String> {
    let mut selectors = Selectors::default();
    let compiled = compile(query, &mut selectors)?;
    let mut store = SeriesStore::new(selectors.matchers.clone(), 1000);
    let mut stats = IngestStats::default();
    for p in points {
        store.ingest(p, i64::MIN, &mut stats);
    }
    Ok(match evaluate(&compiled, &store, at, LOOKBACK)? {
        Value::Scalar(v) => vec![format!("scalar {v}")],
        Value::Vector(v) => {
            let mut out: Vec<String> = v.iter().map(|s| format!("{} {}", s.labels, s.value)).collect();
            out.sort();
            out
        }
        other => vec![format!("{other:?}")],
    })
}

fn requests() -> Vec<Point> {
    let mut out = Vec::new();
    for i in 0..=10 {
        let t = i * 30 * S;
        out.push(point("http_requests_total", &[("job", "api"), ("instance", "a")], t, (i * 30) as f64));
        out.push(point("http_requests_total", &[("job", "api"), ("instance", "b")], t, (i * 60) as f64));
        out.push(point("http_requests_total", &[("job", "web"), ("instance", "c")], t, 5.0));
    }
    out
}

#[test]
fn selectors_with_every_matcher() {
    let p = requests();
    let at = 300 * S;
    assert_eq!(
        eval_at(r#"http_requests_total{instance="a"}"#, &p, at).unwrap(),
        [r#"http_requests_total{instance="a", job="api"} 300"#]
    );
    assert_eq!(
        eval_at(r#"http_requests_total{job!="api"}"#, &p, at).unwrap(),
        [r#"http_requests_total{instance="c", job="web"} 5"#]
    );
    assert_eq!(eval_at(r#"http_requests_total{instance=~"a|c"}"#, &p, at).unwrap().len(), 2);
    assert_eq!(eval_at(r#"http_requests_total{instance!~"a|c"}"#, &p, at).unwrap().len(), 1);
    assert_eq!(eval_at(r#"{__name__="http_requests_total", job="web"}"#, &p, at).unwrap().len(), 1);
}

#[test]
fn range_functions_and_aggregations() {
    let p = requests();
    let at = 300 * S;
    assert_eq!(
        eval_at(r#"rate(http_requests_total{job="api"}[5m])"#, &p, at).unwrap(),
        [r#"{instance="a", job="api"} 1"#, r#"{instance="b", job="api"} 2"#]
    );
    assert_eq!(
        eval_at("sum by (job) (rate(http_requests_total[5m]))", &p, at).unwrap(),
        [r#"{job="api"} 3"#, r#"{job="web"} 0"#]
    );
    assert_eq!(
        eval_at("count without (instance) (http_requests_total)", &p, at).unwrap(),
        [r#"{job="api"} 2"#, r#"{job="web"} 1"#]
    );
    assert_eq!(eval_at("max(http_requests_total)", &p, at).unwrap(), ["{} 600"]);
    assert_eq!(
        eval_at(r#"avg_over_time(http_requests_total{instance="c"}[5m])"#, &p, at).unwrap(),
        [r#"{instance="c", job="web"} 5"#]
    );
    assert_eq!(
        eval_at(r#"count_over_time(http_requests_total{instance="c"}[1m])"#, &p, at).unwrap(),
        [r#"{instance="c", job="web"} 3"#]
    );
    assert_eq!(
        eval_at(r#"last_over_time(http_requests_total{instance="a"}[1m])"#, &p, at).unwrap(),
        [r#"http_requests_total{instance="a", job="api"} 300"#]
    );
    assert_eq!(
        eval_at(r#"quantile_over_time(0.5, http_requests_total{instance="a"}[1m])"#, &p, at).unwrap(),
        [r#"{instance="a", job="api"} 270"#]
    );
    assert_eq!(
        eval_at(r#"increase(http_requests_total{instance="a"}[5m])"#, &p, at).unwrap(),
        [r#"{instance="a", job="api"} 300"#]
    );
    assert_eq!(
        eval_at(r#"delta(http_requests_total{instance="c"}[5m])"#, &p, at).unwrap(),
        [r#"{instance="c", job="web"} 0"#]
    );
}

#[test]
fn comparisons_arithmetic_and_set_operators() {
    let p = requests();
    let at = 300 * S;
    assert_eq!(eval_at("http_requests_total > 100", &p, at).unwrap().len(), 2);
    assert_eq!(
        eval_at("100 < http_requests_total", &p, at).unwrap().len(),
        2,
        "scalar on the left keeps the vector's value"
    );
    assert_eq!(
        eval_at(r#"http_requests_total{instance="c"} > bool 100"#, &p, at).unwrap(),
        [r#"{instance="c", job="web"} 0"#]
    );
    assert_eq!(
        eval_at(r#"http_requests_total{instance="a"} / 60 * 2"#, &p, at).unwrap(),
        [r#"{instance="a", job="api"} 10"#]
    );
    assert_eq!(
        eval_at(r#"-http_requests_total{instance="c"} + 1"#, &p, at).unwrap(),
        [r#"{instance="c", job="web"} -4"#]
    );
    assert_eq!(eval_at("2 ^ 3 + 1 > bool 8", &p, at).unwrap(), ["scalar 1"]);
    assert_eq!(eval_at(r#"http_requests_total and http_requests_total{job="web"}"#, &p, at).unwrap().len(), 1);
    assert_eq!(
        eval_at(r#"http_requests_total unless on(job) http_requests_total{instance="a"}"#, &p, at).unwrap().len(),
        1
    );
    assert_eq!(
        eval_at(r#"http_requests_total{job="web"} or http_requests_total{instance="a"}"#, &p, at).unwrap().len(),
        2
    );
    assert_eq!(
        eval_at(r#"http_requests_total{instance="b"} / ignoring(instance) http_requests_total{instance="a"}"#, &p, at)
            .unwrap(),
        [r#"{job="api"} 2"#]
    );
    assert!(
        eval_at(r#"http_requests_total / on(job) http_requests_total"#, &p, at).unwrap_err().contains("many-to-many")
    );
}

#[test]
fn absence_and_staleness() {
    let p = requests();
    assert_eq!(eval_at(r#"absent(nonexistent{job="x", instance=~"y"})"#, &p, 300 * S).unwrap(), [r#"{job="x"} 1"#]);
    assert!(eval_at("absent(http_requests_total)", &p, 300 * S).unwrap().is_empty());
    assert_eq!(eval_at("absent_over_time(http_requests_total[1m])", &p, 420 * S).unwrap(), ["{} 1"]);
    assert!(
        eval_at("absent_over_time(http_requests_total[1m])", &p, 360 * S).unwrap().is_empty(),
        "range ends are inclusive"
    );
    // The last samples are at 300 s: visible for the 5 minute lookback, inclusive, then gone.
    assert_eq!(eval_at("http_requests_total", &p, 600 * S).unwrap().len(), 3);
    assert!(eval_at("http_requests_total", &p, 600 * S + 1).unwrap().is_empty());
    let mut stale = p.clone();
    stale.push(point(
        "http_requests_total",
        &[("job", "web"), ("instance", "c")],
        330 * S,
        f64::from_bits(STALE_NAN_BITS),
    ));
    assert_eq!(eval_at("http_requests_total", &stale, 340 * S).unwrap().len(), 2, "a staleness marker ends its series");
    assert_eq!(eval_at("vector(1) + time()", &p, 10 * S).unwrap(), ["{} 11"]);
}

#[test]
fn the_whole_engine_runs_on_the_stream() {
    let p = requests();
    assert_eq!(eval_at("topk(1, http_requests_total)", &p, 300 * S).unwrap().len(), 1);
    assert_eq!(eval_at("http_requests_total offset 1m", &p, 300 * S).unwrap().len(), 3);
    let sub = eval_at("max_over_time(rate(http_requests_total[1m])[3m:30s])", &p, 300 * S).unwrap();
    assert_eq!(sub.len(), 3, "{sub:?}");
}

#[test]
fn constructs_outside_the_engine_are_named() {
    for (query, construct) in [
        ("x @ 100", "@"),
        ("rate(x[5m] @ end())", "@"),
        ("histogram_count(x)", "histogram_count"),
        ("x{a=\"b\" or c=\"d\"}", "or"),
        ("rate(x)", "rate"),
    ] {
        let err = compile(query, &mut Selectors::default()).unwrap_err();
        assert!(err.contains(construct), "{query}: {err}");
    }
}
