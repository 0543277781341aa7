//! Prometheus rule files: loading, checking what the stream evaluator refuses, compiling.
//!
//! The format is Prometheus' (`groups` with `name`, `interval`, `limit` and `rules`; alerting rules with
//! `alert`, `expr`, `for`, `keep_firing_for`, `labels`, `annotations`). Unknown keys are errors, as
//! in Prometheus. Recording rules are rejected: the stream evaluator has nowhere to keep their
//! results consistent with the store, so they belong in Prometheus or vmalert over the store.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::expr::{self, Compiled, Selectors};
use crate::template::Template;
use yaffle_promql::Kind;

/// A problem in a rule file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: PathBuf,
    /// The group, when the problem is inside one.
    pub group: Option<String>,
    /// The rule (1-based position in its group, and its name), when the problem is inside one.
    pub rule: Option<(usize, String)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(g) = &self.group {
            write!(f, ": group {g:?}")?;
        }
        if let Some((i, name)) = &self.rule {
            write!(f, ", rule {i} ({name})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RuleError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    groups: Vec<GroupDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDef {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    rules: Vec<RuleDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: serde_yaml::Value,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A group of alerting rules.
#[derive(Debug)]
pub struct Group {
    /// The file it came from.
    pub file: PathBuf,
    /// Its name.
    pub name: String,
    /// Its `interval` (the default when absent): used for alerts' `endsAt`, as Prometheus does.
    pub interval: Duration,
    /// Most alerts one rule may produce at one evaluation (0: no limit).
    pub limit: usize,
    /// Its alerting rules.
    pub rules: Vec<Arc<AlertRule>>,
    /// Its recording rules.
    pub records: Vec<Arc<RecordRule>>,
}

/// One recording rule, compiled: its results are written back through ingest as the series
/// `record`, stored and readable like any other.
#[derive(Debug)]
pub struct RecordRule {
    /// `record`: the metric name of the results.
    pub name: String,
    /// `expr` as written.
    pub expr: String,
    pub(crate) compiled: Compiled,
    /// `labels`, added to every result (no templates, as in Prometheus).
    pub labels: Vec<(String, String)>,
}

/// A rule of either kind, as compiled.
enum Rule {
    Alert(AlertRule),
    Record(RecordRule),
}

/// One alerting rule, compiled.
#[derive(Debug)]
pub struct AlertRule {
    /// `alert`.
    pub name: String,
    /// `expr` as written.
    pub expr: String,
    pub(crate) compiled: Compiled,
    /// `for`.
    pub for_: Duration,
    /// `keep_firing_for`.
    pub keep_firing_for: Duration,
    /// `labels`, as templates.
    pub labels: Vec<(String, Template)>,
    /// `annotations`, as templates.
    pub annotations: Vec<(String, Template)>,
    /// The selectors the expression reads.
    pub(crate) selectors: Vec<usize>,
    /// Identifies the definition: a reload keeps the state of rules whose key is unchanged.
    pub(crate) key: String,
}

/// Every loaded group, and the selectors their rules read.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// The groups, in file order.
    pub groups: Vec<Group>,
    pub(crate) selectors: Selectors,
    /// The files loaded.
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// Loads rule files; a directory stands for the `*.yml` and `*.yaml` files in it. Every problem in
    /// every file is reported, not only the first.
    pub fn load(paths: &[PathBuf], default_interval: Duration) -> Result<Self, Vec<RuleError>> {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        for file in expand_paths(paths).map_err(|e| vec![e])? {
            match std::fs::read_to_string(&file) {
                Ok(text) => set.add_file(&file, &text, default_interval, &mut errors),
                Err(e) => errors.push(RuleError {
                    file: file.clone(),
                    group: None,
                    rule: None,
                    message: format!("cannot read: {e}"),
                }),
            }
            set.files.push(file);
        }
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    /// Parses one file's text into the set; problems go to `errors`.
    pub fn add_file(&mut self, file: &Path, text: &str, default_interval: Duration, errors: &mut Vec<RuleError>) {
        let err = |group: Option<&str>, rule: Option<(usize, &str)>, message: String| RuleError {
            file: file.to_path_buf(),
            group: group.map(str::to_string),
            rule: rule.map(|(i, n)| (i, n.to_string())),
            message,
        };
        let def: FileDef = match serde_yaml::from_str(text) {
            Ok(d) => d,
            Err(e) => return errors.push(err(None, None, e.to_string())),
        };
        let mut names = HashSet::new();
        for g in def.groups {
            if g.name.is_empty() {
                errors.push(err(None, None, "a group has no name".into()));
                continue;
            }
            if !names.insert(g.name.clone()) {
                errors.push(err(Some(&g.name), None, "group name repeated in the same file".into()));
                continue;
            }
            let interval = match g.interval.as_deref().map(duration) {
                None => default_interval,
                Some(Ok(d)) if !d.is_zero() => d,
                Some(Ok(_)) => {
                    errors.push(err(Some(&g.name), None, "interval must be positive".into()));
                    continue;
                }
                Some(Err(e)) => {
                    errors.push(err(Some(&g.name), None, format!("interval: {e}")));
                    continue;
                }
            };
            let mut group = Group {
                file: file.to_path_buf(),
                name: g.name.clone(),
                interval,
                limit: g.limit,
                rules: Vec::new(),
                records: Vec::new(),
            };
            for (i, r) in g.rules.into_iter().enumerate() {
                let label = r.alert.as_deref().or(r.record.as_deref()).map_or_else(String::new, str::to_string);
                match self.compile_rule(r, &g.name) {
                    Ok(Rule::Alert(rule)) => group.rules.push(Arc::new(rule)),
                    Ok(Rule::Record(rule)) => group.records.push(Arc::new(rule)),
                    Err(m) => errors.push(err(Some(&g.name), Some((i + 1, &label)), m)),
                }
            }
            self.groups.push(group);
        }
    }

    fn compile_rule(&mut self, r: RuleDef, group: &str) -> Result<Rule, String> {
        let expr = match &r.expr {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => return Err("expr must be a string".into()),
        };
        if expr.trim().is_empty() {
            return Err("expr is empty".into());
        }
        let name = match (r.alert, r.record) {
            (Some(_), Some(_)) => return Err("only one of alert and record may be set".into()),
            (None, None) => return Err("one of alert or record must be set".into()),
            (None, Some(record)) => {
                if !valid_metric_name(&record) {
                    return Err(format!("invalid recording rule name: {record:?}"));
                }
                if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
                    return Err(format!(
                        "recording rule {record:?}: for, keep_firing_for and annotations belong to alerting rules"
                    ));
                }
                let compiled = expr::compile(&expr, &mut self.selectors).map_err(|e| format!("expr {expr:?}: {e}"))?;
                if !matches!(compiled.kind, Kind::Vector | Kind::Scalar) {
                    return Err(format!("expr {expr:?}: a recording rule needs an instant vector or a scalar"));
                }
                for k in r.labels.keys() {
                    if !yaffle_promql::valid_label_name(k) {
                        return Err(format!("invalid label name: {k:?}"));
                    }
                }
                let labels = r.labels.into_iter().collect();
                return Ok(Rule::Record(RecordRule { name: record, expr, compiled, labels }));
            }
            (Some(a), None) if a.is_empty() => return Err("alert name is empty".into()),
            (Some(a), None) => a,
        };
        let compiled = expr::compile(&expr, &mut self.selectors).map_err(|e| format!("expr {expr:?}: {e}"))?;
        if compiled.kind != Kind::Vector {
            return Err(format!(
                "expr {expr:?}: an alerting rule needs an instant vector, not a {}",
                compiled.kind.name()
            ));
        }
        let for_ = optional_duration(r.for_.as_deref(), "for")?;
        let keep_firing_for = optional_duration(r.keep_firing_for.as_deref(), "keep_firing_for")?;
        let labels = templates(r.labels, "label")?;
        let annotations = templates(r.annotations, "annotation")?;
        let selectors = compiled.selectors.clone();
        let key = format!(
            "{group}\0{name}\0{expr}\0{for_:?}\0{keep_firing_for:?}\0{:?}\0{:?}",
            labels.iter().map(|(k, t)| (k, t.source())).collect::<Vec<_>>(),
            annotations.iter().map(|(k, t)| (k, t.source())).collect::<Vec<_>>()
        );
        Ok(Rule::Alert(AlertRule { name, expr, compiled, for_, keep_firing_for, labels, annotations, selectors, key }))
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len() + g.records.len()).sum()
    }

    /// Longest any rule reads back from its evaluation time, besides the lookback (ranges, offsets,
    /// subqueries).
    pub(crate) fn max_history_ns(&self) -> i64 {
        let alerts = self.groups.iter().flat_map(|g| &g.rules).map(|r| r.compiled.history_ns);
        let records = self.groups.iter().flat_map(|g| &g.records).map(|r| r.compiled.history_ns);
        alerts.chain(records).max().unwrap_or(0)
    }

    /// Longest `for` plus `keep_firing_for` of any rule.
    pub(crate) fn max_hold(&self) -> Duration {
        self.groups.iter().flat_map(|g| &g.rules).map(|r| r.for_ + r.keep_firing_for).max().unwrap_or_default()
    }
}

fn templates(map: BTreeMap<String, String>, what: &str) -> Result<Vec<(String, Template)>, String> {
    map.into_iter()
        .map(|(k, v)| {
            if !yaffle_promql::valid_label_name(&k) {
                return Err(format!("invalid {what} name {k:?}"));
            }
            Template::parse(&v).map(|t| (k.clone(), t)).map_err(|e| format!("{what} {k:?}: {e}"))
        })
        .collect()
}

/// A Prometheus duration (`30s`, `5m`, `1h30m`, `1d`, `1w`, `1y`, `500ms`).
pub fn duration(s: &str) -> Result<Duration, String> {
    promql_parser::util::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn optional_duration(s: Option<&str>, what: &str) -> Result<Duration, String> {
    s.map_or(Ok(Duration::ZERO), duration).map_err(|e| format!("{what}: {e}"))
}

fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| RuleError {
                file: p.clone(),
                group: None,
                rule: None,
                message: format!("cannot list directory: {e}"),
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

/// Whether `name` is a valid Prometheus metric name (recording rules may use colons).
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
