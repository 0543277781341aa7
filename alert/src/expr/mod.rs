//! Rule expressions: parsed and evaluated by the shared PromQL engine ([`yaffle_promql`]) over the
//! evaluator's in-memory series. Each selector of a rule is interned once when the rule loads, so
//! evaluation hands the engine the series of each selection by its interned id, without matching.
//!
//! Everything the engine evaluates is accepted (its table is in [`yaffle_promql`]), except the `@`
//! modifier: a rule is evaluated at its evaluation time, where `@ start()` and `@ end()` change
//! nothing, and a fixed `@` time needs history the stream does not keep.

use std::collections::HashMap;

use yaffle_promql::{Budget, EngineConfig, Kind, Matcher, Query, Series};

pub(crate) use yaffle_promql::Value;

use crate::series::SeriesStore;

/// The selectors of every compiled expression, shared so equal selectors are stored once.
#[derive(Debug, Default)]
pub(crate) struct Selectors {
    pub(crate) matchers: Vec<Vec<Matcher>>,
    index: HashMap<Vec<Matcher>, usize>,
}

impl Selectors {
    fn intern(&mut self, matchers: &[Matcher]) -> usize {
        if let Some(&i) = self.index.get(matchers) {
            return i;
        }
        self.matchers.push(matchers.to_vec());
        self.index.insert(matchers.to_vec(), self.matchers.len() - 1);
        self.matchers.len() - 1
    }
}

/// A checked expression, ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) query: Query,
    pub(crate) kind: Kind,
    /// The interned selectors the expression reads.
    pub(crate) selectors: Vec<usize>,
    /// How far before the evaluation time the expression reads, besides the lookback.
    pub(crate) history_ns: i64,
}

/// Parses and checks an expression. The error names what is refused.
pub(crate) fn compile(source: &str, selectors: &mut Selectors) -> Result<Compiled, String> {
    let query = Query::parse(source, 0, 0).map_err(|e| e.to_string())?;
    if query.uses_at() {
        return Err("the @ modifier is not supported by the stream evaluator".into());
    }
    let no_lookback = EngineConfig { lookback: std::time::Duration::ZERO, ..EngineConfig::default() };
    let history_ns =
        query.selections(0, 0, &no_lookback).iter().map(|s| s.start_ns.saturating_neg()).max().unwrap_or(0).max(0);
    let ids = query.selectors().iter().map(|m| selectors.intern(m)).collect();
    Ok(Compiled { kind: query.kind(), query, selectors: ids, history_ns })
}

/// Evaluates `compiled` at `at` (ns) over the store, with instant selectors looking back `lookback_ns`.
pub(crate) fn evaluate(compiled: &Compiled, store: &SeriesStore, at: i64, lookback_ns: i64) -> Result<Value, String> {
    let cfg = EngineConfig {
        lookback: std::time::Duration::from_nanos(u64::try_from(lookback_ns).unwrap_or(0)),
        max_samples: usize::MAX,
        ..EngineConfig::default()
    };
    // `selections` lists the query's selectors in order, as `compiled.selectors` interned them.
    let data: Vec<Vec<Series>> = compiled
        .query
        .selections(at, at, &cfg)
        .iter()
        .zip(&compiled.selectors)
        .map(|(selection, &id)| {
            store.selectors[id]
                .members
                .iter()
                .map(|&slot| {
                    let s = store.get(slot);
                    Series::raw(s.labels.clone(), s.range(selection.start_ns, selection.end_ns).collect())
                })
                .collect()
        })
        .collect();
    compiled.query.instant(&data, at, &cfg, &Budget::default()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
