//! Evaluation over in-memory series, checked against values worked out by hand with Prometheus'
//! rules. The differential test against a real Prometheus is in the root package's end-to-end tests.

use super::*;

const S: i64 = 1_000_000_000;

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    Series::raw(Labels::from_pairs(labels.iter().copied()), samples.iter().map(|&(t, v)| (t * S, v)).collect())
}

/// A source over fixed series.
struct Fixed(Vec<Series>);

impl Source for Fixed {
    async fn select(&self, selection: &Selection) -> Result<Vec<Series>, Error> {
        Ok(self
            .0
            .iter()
            .filter(|s| selection.matches(&s.labels))
            .map(|s| {
                let samples =
                    s.samples.iter().copied().filter(|&(t, _)| t >= selection.start_ns && t <= selection.end_ns);
                Series::raw(s.labels.clone(), samples.collect())
            })
            .collect())
    }
}

fn data() -> Fixed {
    let counter = |i: i64| (i * 15, (i * 10) as f64);
    Fixed(vec![
        series(
            &[("__name__", "http_requests_total"), ("job", "api"), ("instance", "a")],
            &(0..=40).map(counter).collect::<Vec<_>>(),
        ),
        series(
            &[("__name__", "http_requests_total"), ("job", "api"), ("instance", "b")],
            &(0..=40).map(|i| (i * 15, (i * 20) as f64)).collect::<Vec<_>>(),
        ),
        series(&[("__name__", "up"), ("job", "api"), ("instance", "a")], &[(0, 1.0), (300, 1.0), (600, 0.0)]),
    ])
}

fn instant(q: &str, t: i64) -> Result<Value, Error> {
    let cfg = EngineConfig::default();
    let query = Query::parse(q, t * S, t * S)?;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let loaded = rt.block_on(query.load(&data(), t * S, t * S, &cfg))?;
    query.instant(&loaded, t * S, &cfg, &Budget::default())
}

fn vector(q: &str, t: i64) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = match instant(q, t).unwrap() {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.value)).collect(),
        Value::Scalar(v) => vec![("scalar".into(), v)],
        other => panic!("{other:?}"),
    };
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn rate_sum_by_and_topk() {
    let r = vector("sum by (job) (rate(http_requests_total[5m]))", 600);
    assert_eq!(r.len(), 1);
    assert!((r[0].1 - 2.0).abs() < 1e-9, "{r:?}");
    let top = vector("topk(1, http_requests_total)", 600);
    assert_eq!(top, vec![(r#"http_requests_total{instance="b", job="api"}"#.into(), 800.0)]);
}

#[test]
fn lookback_offset_and_at() {
    // The last `up` sample is at 600 s; five minutes later it is still seen, a moment later not.
    assert_eq!(vector("up", 900).len(), 1);
    assert!(vector("up", 901).is_empty());
    assert_eq!(vector("up offset 5m", 600)[0].1, 1.0);
    assert_eq!(vector("up @ 600", 100)[0].1, 0.0);
    assert_eq!(vector("timestamp(up)", 650)[0].1, 600.0);
}

#[test]
fn matching_group_left_and_set_operators() {
    let r = vector("http_requests_total * on (instance) group_left up", 600);
    assert_eq!(r, vec![(r#"{instance="a", job="api"}"#.into(), 0.0)]);
    assert_eq!(vector("http_requests_total and up", 600).len(), 1);
    assert_eq!(vector("http_requests_total unless up", 600).len(), 1);
    // `or` matches ignoring the name: up{instance="a"} is not added beside its request counter.
    assert_eq!(vector("http_requests_total or up", 600).len(), 2);
    let err = instant("http_requests_total + on (job) http_requests_total", 600).unwrap_err();
    assert_eq!(err.error_type(), "execution");
}

#[test]
fn subquery_and_range_query() {
    let r = vector("max_over_time(rate(http_requests_total{instance=\"a\"}[1m])[5m:1m])", 600);
    assert!((r[0].1 - 2.0 / 3.0).abs() < 1e-9, "{r:?}");
    let cfg = EngineConfig::default();
    let q = Query::parse("up", 0, 600 * S).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let loaded = rt.block_on(q.load(&data(), 0, 600 * S, &cfg)).unwrap();
    let m = q.range(&loaded, 0, 600 * S, 300 * S, &cfg, &Budget::default()).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].samples, vec![(0, 1.0), (300 * S, 1.0), (600 * S, 0.0)]);
}

#[test]
fn refusals_are_bad_data() {
    for q in ["rate(up)", "sum(", "histogram_count(up)", "up[5m] + 1", "limitk(1, up)"] {
        let err = instant(q, 600).unwrap_err();
        assert_eq!(err.error_type(), "bad_data", "{q}: {err}");
    }
}

#[test]
fn label_functions_and_histogram_quantile() {
    let r = vector(r#"label_replace(up, "host", "$1-x", "instance", "(.*)")"#, 600);
    assert_eq!(r[0].0, r#"up{host="a-x", instance="a", job="api"}"#);
    let r = vector(r#"label_join(up, "both", "/", "job", "instance")"#, 600);
    assert_eq!(r[0].0, r#"up{both="api/a", instance="a", job="api"}"#);
    assert_eq!(vector("count_values(\"v\", up)", 600), vec![(r#"{v="0"}"#.into(), 1.0)]);
}
