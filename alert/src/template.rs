//! Label and annotation templates: Go `text/template` (the `gotmpl` crate) with the variables and the
//! common functions Prometheus gives alerting rules.
//!
//! Variables: `$labels` (the alert's labels), `$value` (the sample value), `$externalLabels`,
//! `$externalURL`; the same data is `.Labels`, `.Value`, `.ExternalLabels`, `.ExternalURL`.
//! Functions, besides Go's builtins (`printf`, `len`, `eq`, ...): `humanize`, `humanize1024`,
//! `humanizeDuration`, `humanizePercentage`, `humanizeTimestamp`, `toUpper`, `toLower`, `title`,
//! `match`, `reReplaceAll`, `stripPort`. Prometheus' `query` and its helpers (`first`, `value`, `label`,
//! `sortByLabel`) read a TSDB the stream evaluator does not have: a template using them fails to load.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{TemplateError, Value};

use crate::labels::Labels;

const PRELUDE: &str =
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// A parsed template.
#[derive(Clone)]
pub struct Template {
    source: String,
    parsed: Option<Arc<gotmpl::Template>>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

/// What a template sees.
#[derive(Debug, Clone, Copy)]
pub struct TemplateData<'a> {
    /// The alert's labels (the sample's labels and the rule's).
    pub labels: &'a Labels,
    /// The sample value.
    pub value: f64,
    /// Labels added to every alert.
    pub external_labels: &'a Labels,
    /// The evaluator's external URL.
    pub external_url: &'a str,
}

impl Template {
    /// Parses `source`; text without `{{` is kept as is and never executed.
    pub fn parse(source: &str) -> Result<Self, String> {
        if !source.contains("{{") {
            return Ok(Self { source: source.to_string(), parsed: None });
        }
        // A bare `{{ $value }}` prints as Go's `%v` of a float64 does (`1.5e+06`); gotmpl would
        // print Rust's form.
        let go_source = bare_value().replace_all(source, "{{${1} goFloat ${2} ${3}}}");
        let parsed = with_functions(gotmpl::Template::new("__alert"))
            .missing_key(gotmpl::MissingKey::ZeroValue)
            .parse(&format!("{PRELUDE}{go_source}"))
            .map_err(|e| format!("template {source:?}: {e}"))?;
        let template = Self { source: source.to_string(), parsed: Some(Arc::new(parsed)) };
        // Go refuses unknown functions when parsing; gotmpl only when executing, so try it once.
        let empty = Labels::default();
        let probe = TemplateData { labels: &empty, value: 0.0, external_labels: &empty, external_url: "" };
        if let Err(TemplateError::UndefinedFunction(f)) = template.execute(probe) {
            return Err(format!("template {source:?}: function {f:?} not defined"));
        }
        Ok(template)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Expands the template. On an error the result is the error text, as Prometheus does, so a
    /// broken annotation never stops an alert.
    pub fn expand(&self, data: TemplateData<'_>) -> String {
        match self.execute(data) {
            Ok(s) => s,
            Err(e) => format!("<error expanding template: {e}>"),
        }
    }

    fn execute(&self, data: TemplateData<'_>) -> Result<String, TemplateError> {
        let Some(parsed) = &self.parsed else { return Ok(self.source.clone()) };
        let map = |l: &Labels| {
            Value::Map(Arc::new(l.iter().map(|(k, v)| (Arc::from(k), Value::String(Arc::from(v)))).collect()))
        };
        let mut root = BTreeMap::new();
        root.insert(Arc::from("Labels"), map(data.labels));
        root.insert(Arc::from("ExternalLabels"), map(data.external_labels));
        root.insert(Arc::from("ExternalURL"), Value::String(Arc::from(data.external_url)));
        root.insert(Arc::from("Value"), Value::Float(data.value));
        // Prometheus runs templates with `missingkey=zero`: a label the alert lacks is "" (gotmpl
        // prints its nil as Go's "<no value>").
        Ok(parsed.execute_to_string(&Value::Map(Arc::new(root)))?.replace("<no value>", ""))
    }
}

/// An action printing only `$value` or `.Value`.
fn bare_value() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\{\{(-?)\s*(\$value|\.Value)\s*(-?)\}\}").expect("valid regex"))
}

/// A float as Go's `%v` prints it (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest digits,
/// in exponent form when the decimal exponent is below -4 or 6 and above.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("Rust's {:e} has an exponent");
    let exp: i32 = exp.parse().expect("a number");
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

fn with_functions(t: gotmpl::Template) -> gotmpl::Template {
    t.func("goFloat", |a| float_arg("goFloat", a).map(|v| text(go_float(v))))
        .func("humanize", |a| float_arg("humanize", a).map(|v| text(humanize(v))))
        .func("humanize1024", |a| float_arg("humanize1024", a).map(|v| text(humanize1024(v))))
        .func("humanizeDuration", |a| float_arg("humanizeDuration", a).map(|v| text(humanize_duration(v))))
        .func("humanizePercentage", |a| float_arg("humanizePercentage", a).map(|v| text(format!("{}%", g4(v * 100.0)))))
        .func("humanizeTimestamp", |a| float_arg("humanizeTimestamp", a).map(|v| text(humanize_timestamp(v))))
        .func("toUpper", |a| str_arg("toUpper", a).map(|s| text(s.to_uppercase())))
        .func("toLower", |a| str_arg("toLower", a).map(|s| text(s.to_lowercase())))
        .func("title", |a| str_arg("title", a).map(|s| text(title(&s))))
        .func("stripPort", |a| str_arg("stripPort", a).map(|s| text(strip_port(&s))))
        .func("match", |a| {
            let (re, s) = (str_at("match", a, 0)?, str_at("match", a, 1)?);
            Ok(Value::Bool(regex(&re)?.is_match(&s)))
        })
        .func("reReplaceAll", |a| {
            let (re, repl, s) =
                (str_at("reReplaceAll", a, 0)?, str_at("reReplaceAll", a, 1)?, str_at("reReplaceAll", a, 2)?);
            Ok(text(regex(&re)?.replace_all(&s, repl.as_str()).into_owned()))
        })
}

fn text(s: String) -> Value {
    Value::String(Arc::from(s))
}

fn regex(re: &str) -> Result<regex::Regex, TemplateError> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| TemplateError::Exec(format!("bad regex {re:?}: {e}")))
}

fn str_at(f: &str, args: &[Value], i: usize) -> Result<String, TemplateError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s.to_string()),
        Some(other) => Ok(other.to_string()),
        None => Err(TemplateError::Exec(format!("{f}: missing argument {}", i + 1))),
    }
}

fn str_arg(f: &str, args: &[Value]) -> Result<String, TemplateError> {
    str_at(f, args, 0)
}

fn float_arg(f: &str, args: &[Value]) -> Result<f64, TemplateError> {
    match args.first() {
        Some(Value::Float(v)) => Ok(*v),
        Some(Value::Int(v)) => Ok(*v as f64),
        Some(Value::String(s)) => {
            s.trim().parse().map_err(|_| TemplateError::Exec(format!("{f}: {s:?} is not a number")))
        }
        other => Err(TemplateError::Exec(format!("{f}: expected a number, got {other:?}"))),
    }
}

/// Go's `%.4g`.
fn g4(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    // %g rounds to 4 significant digits first; the rounded value decides the notation.
    let rounded: f64 = format!("{v:.3e}").parse().unwrap_or(v);
    let exp = if rounded.abs() >= 10f64.powi(exp + 1) { exp + 1 } else { exp };
    if !(-4..4).contains(&exp) {
        let s = format!("{v:.3e}");
        let (mantissa, e) = s.split_once('e').expect("scientific notation");
        let mantissa = trim_zeros(mantissa);
        let e: i32 = e.parse().expect("exponent");
        format!("{mantissa}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (3 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return g4(v);
    }
    if v.abs() >= 1.0 {
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", g4(v));
    }
    let (v, prefix) = small_prefix(v);
    format!("{}{prefix}", g4(v))
}

/// Scales a value below 1 up by thousands: the value and its SI prefix.
fn small_prefix(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    (v, prefix)
}

fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return g4(v);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", g4(v))
}

fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return g4(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        return if days != 0 {
            format!("{sign}{days}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", g4(v))
        };
    }
    let (v, prefix) = small_prefix(v);
    format!("{}{prefix}s", g4(v))
}

fn humanize_timestamp(v: f64) -> String {
    if !v.is_finite() {
        return g4(v);
    }
    let nanos = (v * 1e9) as i64;
    let t = chrono::DateTime::from_timestamp_nanos(nanos);
    // Go's time.Time.String() in UTC.
    format!("{} +0000 UTC", t.format("%Y-%m-%d %H:%M:%S%.f"))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, _)) = rest.split_once(']')
    {
        return host.to_string();
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(source: &str, value: f64) -> String {
        let labels = Labels::from_pairs([("instance", "web-1:9100"), ("job", "node")]);
        let ext = Labels::from_pairs([("dc", "eu")]);
        Template::parse(source).unwrap().expand(TemplateData {
            labels: &labels,
            value,
            external_labels: &ext,
            external_url: "http://yaffle:9096",
        })
    }

    #[test]
    fn prometheus_variables_and_functions() {
        assert_eq!(expand("{{ $labels.instance }} is down", 0.0), "web-1:9100 is down");
        assert_eq!(expand("{{ .Labels.job }}/{{ $externalLabels.dc }}", 0.0), "node/eu");
        assert_eq!(expand("{{ $value }}", 0.5), "0.5");
        // Go's %v of a float64, as Prometheus prints it.
        assert_eq!(expand("{{ $value }}", 1.5e6), "1.5e+06");
        assert_eq!(expand("{{ $value }}", 5e-5), "5e-05");
        assert_eq!(expand("{{ $value }}", 100000.0), "100000");
        assert_eq!(expand("{{ $value }}", 123456789.0), "1.23456789e+08");
        assert_eq!(expand("{{ $value }}", 3.0), "3");
        assert_eq!(expand("{{ $labels.missing }}", 0.0), "");
        assert_eq!(expand(r#"{{ printf "%.2f" $value }}"#, 1.23456), "1.23");
        assert_eq!(expand("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(expand("{{ humanize $value }}", 0.001234), "1.234m");
        assert_eq!(expand("{{ humanize1024 $value }}", 2048.0), "2ki");
        assert_eq!(expand("{{ humanizeDuration $value }}", 3723.0), "1h 2m 3s");
        assert_eq!(expand("{{ humanizeDuration $value }}", 1.5), "1.5s");
        assert_eq!(expand("{{ humanizePercentage $value }}", 0.1234), "12.34%");
        assert_eq!(expand("{{ humanizeTimestamp $value }}", 0.0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(expand("{{ $labels.instance | stripPort | toUpper }}", 0.0), "WEB-1");
        assert_eq!(expand(r#"{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}"#, 0.0), "web-1");
        assert_eq!(expand(r#"{{ if match "web-.*" $labels.instance }}web{{ end }}"#, 0.0), "web");
        assert_eq!(expand("plain text", 1.0), "plain text");
    }

    #[test]
    fn g_formatting_matches_go() {
        for (v, want) in
            [(1.0, "1"), (123456.0, "1.235e+05"), (0.0001234, "0.0001234"), (9999.5, "1e+04"), (1e-5, "1e-05")]
        {
            assert_eq!(g4(v), want, "{v}");
        }
    }

    #[test]
    fn unknown_functions_fail_at_parse_time() {
        let err = Template::parse(r#"{{ query "up" }}"#).unwrap_err();
        assert!(err.contains("query"), "{err}");
    }
}
