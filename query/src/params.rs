//! Request parameters as Prometheus reads them: query string and form body merged, times as Unix
//! seconds or RFC 3339, durations as seconds or Prometheus durations (`5m`, `1h30m`).

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use yaffle_promql::Error;

/// Every parameter in order, the query string's first, then a form body's.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn new(query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Self, Error> {
        let mut all: Vec<(String, String)> = match query {
            Some(q) => {
                serde_urlencoded::from_str(q).map_err(|e| Error::BadData(format!("invalid query string: {e}")))?
            }
            None => Vec::new(),
        };
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if is_form && !body.is_empty() {
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| Error::BadData(format!("invalid form body: {e}")))?;
            all.extend(form);
        }
        Ok(Self(all))
    }

    /// The last value of `name` (a form value overrides the query string's).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// A required time parameter.
    pub(crate) fn time(&self, name: &str) -> Result<i64, Error> {
        match self.get(name) {
            Some(v) => parse_time(v).map_err(|e| Error::BadData(format!("invalid parameter \"{name}\": {e}"))),
            None => {
                Err(Error::BadData(format!("invalid parameter \"{name}\": cannot parse \"\" to a valid timestamp")))
            }
        }
    }

    /// An optional time parameter, `default` when absent or empty.
    pub(crate) fn time_or(&self, name: &str, default: i64) -> Result<i64, Error> {
        match self.get(name) {
            Some(v) if !v.is_empty() => self.time(name),
            _ => Ok(default),
        }
    }
}

/// Prometheus' lowest and highest accepted times, in ns (its `minTime`/`maxTime` clamped to what
/// nanoseconds hold).
pub(crate) const MIN_TIME_NS: i64 = i64::MIN / 2;
pub(crate) const MAX_TIME_NS: i64 = i64::MAX / 2;

/// A time: Unix seconds (fractions rounded to milliseconds, as Prometheus does) or RFC 3339.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<f64>() {
        if !t.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        let secs = t.trunc();
        let ms = ((t - secs) * 1000.0).round() as i64;
        // In integers: a float of nanoseconds since 1970 is only good to a few hundred.
        let secs = secs.clamp((MIN_TIME_NS / 1_000_000_000) as f64, (MAX_TIME_NS / 1_000_000_000) as f64) as i64;
        return Ok(secs * 1_000_000_000 + ms * 1_000_000);
    }
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.timestamp_nanos_opt().ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp")),
        Err(_) => Err(format!("cannot parse {s:?} to a valid timestamp")),
    }
}

/// A duration in ns: seconds (`15`, `0.5`) or a Prometheus duration (`1h30m`, `5m`, `100ms`).
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(d) = s.parse::<f64>() {
        let ns = d * 1e9;
        if !ns.is_finite() || ns >= i64::MAX as f64 || ns <= i64::MIN as f64 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ns as i64);
    }
    let d = yaffle_promql::parse_duration(s).map_err(|e| format!("cannot parse {s:?} to a valid duration: {e}"))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("cannot parse {s:?} to a valid duration. It overflows int64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_as_prometheus_reads_them() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781_000_000);
        assert_eq!(parse_time("1796389381.234").unwrap(), 1_796_389_381_234_000_000);
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z").unwrap(), 1_435_781_451_781_000_000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15").unwrap(), 15_000_000_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("100ms").unwrap(), 100_000_000);
        assert!(parse_duration("5x").is_err());
    }
}
