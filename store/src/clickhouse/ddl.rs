//! The tables' DDL, chosen by server version.
//!
//! Both layouts have the same columns, so inserts are the same bytes on every server:
//!
//! - `points_local` (ReplicatedMergeTree) and `points` (Distributed, sharded by `route`): one row per
//!   field of a point. `time_ns` is the exact timestamp; `time` is an ALIAS of it (DateTime on old
//!   servers, DateTime64(9) on modern ones).
//! - `rollups_local` (ReplicatedReplacingMergeTree on `version`) and `rollups` (Distributed): one row per
//!   (series, field, resolution, window), so rewriting a window replaces it.
//!
//! On **modern servers** (20.x and later) columns get codecs (DoubleDelta for timestamps, Gorilla for
//! floats, ZSTD for text), repeated strings are LowCardinality, and retention becomes TTL: raw points
//! after `retention.points`, rollups after the retention of their resolution. On **old servers**
//! (18.16, Debian's) none of that exists: plain types, and retention drops whole partitions
//! (a day of points, a month of rollups per resolution).

use std::fmt::Write;
use std::time::Duration;

use crate::Retention;

/// A server version, from `SELECT version()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version (year on modern servers).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ServerVersion {
    /// Parses `18.16.1` or `24.3.2.23`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        Some(Self { major: parts.next()?.parse().ok()?, minor: parts.next()?.parse().ok()? })
    }

    /// Whether the server has DateTime64, codecs, LowCardinality and TTL.
    pub fn is_modern(self) -> bool {
        self.major >= 20
    }
}

/// The DDL of one Yaffle database on one cluster.
#[derive(Debug, Clone)]
pub struct Ddl<'a> {
    /// Server version the statements are for.
    pub version: ServerVersion,
    /// Cluster name.
    pub cluster: &'a str,
    /// Database name.
    pub database: &'a str,
    /// Retention (TTL on modern servers).
    pub retention: &'a Retention,
}

/// Column names of `points_local`, in insert order.
pub(crate) const POINTS_COLUMNS: &str = "route, time_ns, database, measurement, series_id, series_key, tag_keys, \
     tag_values, field, value, value_int, value_uint, value_bool, value_str";

/// The columns of a rollup row, in the order [`super::rows::rollup_block`] writes them.
pub(crate) const ROLLUP_COLUMNS: &str = "route, resolution_s, window_start_ns, database, measurement, series_id, \
     series_key, tag_keys, tag_values, field, count, sum, min, max, first, last, first_ns, last_ns, sketch, version";

impl Ddl<'_> {
    /// Every statement, in order; each is idempotent (`IF NOT EXISTS`) and runs `ON CLUSTER`.
    pub fn statements(&self) -> Vec<String> {
        let (db, c) = (self.database, self.cluster);
        vec![
            format!("CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {c}"),
            self.points_local(),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.points ON CLUSTER {c} AS {db}.points_local \
                 ENGINE = Distributed({c}, {db}, points_local, route)"
            ),
            self.rollups_local(),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.rollups ON CLUSTER {c} AS {db}.rollups_local \
                 ENGINE = Distributed({c}, {db}, rollups_local, route)"
            ),
        ]
    }

    fn modern(&self) -> bool {
        self.version.is_modern()
    }

    /// `LowCardinality(String)` where supported.
    fn lc(&self) -> &'static str {
        if self.modern() { "LowCardinality(String)" } else { "String" }
    }

    /// ` CODEC(...)` where supported.
    fn codec(&self, codec: &str) -> String {
        if self.modern() { format!(" CODEC({codec})") } else { String::new() }
    }

    fn time_alias(&self, column: &str) -> String {
        if self.modern() {
            format!("time DateTime64(9, 'UTC') ALIAS fromUnixTimestamp64Nano({column})")
        } else {
            format!("time DateTime ALIAS toDateTime(intDiv({column}, 1000000000))")
        }
    }

    /// The series and field columns both tables share, in insert order.
    fn series_columns(&self) -> String {
        let (lc, z) = (self.lc(), self.codec("ZSTD(1)"));
        format!(
            "database {lc}, measurement {lc}, series_id UInt64, series_key String{z}, tag_keys Array({lc}), \
             tag_values Array(String){z}, field {lc}"
        )
    }

    fn engine(&self, table: &str, replacing_version: Option<&str>) -> String {
        let (db, c) = (self.database, self.cluster);
        let path = format!("'/clickhouse/tables/{c}/{db}/{table}/{{shard}}', '{{replica}}'");
        match replacing_version {
            Some(v) => format!("ReplicatedReplacingMergeTree({path}, {v})"),
            None => format!("ReplicatedMergeTree({path})"),
        }
    }

    fn points_local(&self) -> String {
        let (db, c) = (self.database, self.cluster);
        let mut s = format!(
            "CREATE TABLE IF NOT EXISTS {db}.points_local ON CLUSTER {c} (\
             route UInt64, \
             time_ns Int64{dd}, \
             {time}, \
             {series}, \
             value Nullable(Float64){gorilla}, \
             value_int Nullable(Int64){z}, \
             value_uint Nullable(UInt64){z}, \
             value_bool Nullable(UInt8), \
             value_str Nullable(String){z}) \
             ENGINE = {engine} \
             PARTITION BY toYYYYMMDD(toDateTime(intDiv(time_ns, 1000000000))) \
             ORDER BY (database, measurement, series_id, field, time_ns)",
            dd = self.codec("DoubleDelta, ZSTD(1)"),
            time = self.time_alias("time_ns"),
            series = self.series_columns(),
            z = self.codec("ZSTD(1)"),
            gorilla = self.codec("Gorilla, ZSTD(1)"),
            engine = self.engine("points_local", None),
        );
        if let (true, Some(keep)) = (self.modern(), self.retention.points) {
            write!(s, " TTL toDateTime(intDiv(time_ns, 1000000000)) + INTERVAL {} SECOND", keep.as_secs()).unwrap();
        }
        s
    }

    fn rollups_local(&self) -> String {
        let (db, c) = (self.database, self.cluster);
        let mut s = format!(
            "CREATE TABLE IF NOT EXISTS {db}.rollups_local ON CLUSTER {c} (\
             route UInt64, \
             resolution_s UInt32, \
             window_start_ns Int64{dd}, \
             {time}, \
             {series}, \
             count UInt64{z}, \
             sum Float64{gorilla}, \
             min Float64{gorilla}, \
             max Float64{gorilla}, \
             first Float64{gorilla}, \
             last Float64{gorilla}, \
             first_ns Int64{dd}, \
             last_ns Int64{dd}, \
             sketch String{z}, \
             version UInt64) \
             ENGINE = {engine} \
             PARTITION BY (resolution_s, toYYYYMM(toDateTime(intDiv(window_start_ns, 1000000000)))) \
             ORDER BY (database, measurement, series_id, field, resolution_s, window_start_ns)",
            dd = self.codec("DoubleDelta, ZSTD(1)"),
            time = self.time_alias("window_start_ns"),
            series = self.series_columns(),
            z = self.codec("ZSTD(1)"),
            gorilla = self.codec("Gorilla, ZSTD(1)"),
            engine = self.engine("rollups_local", Some("version")),
        );
        if let Some(ttl) = self.modern().then(|| self.rollups_ttl()).flatten() {
            write!(s, " TTL {ttl}").unwrap();
        }
        s
    }

    /// `toDateTime(start + seconds kept for this row's resolution)`, clamped to DateTime's range so
    /// resolutions kept forever never expire.
    fn rollups_ttl(&self) -> Option<String> {
        let r = self.retention;
        if r.rollups.is_none() && r.by_resolution.is_empty() {
            return None;
        }
        let mut keep = String::from("multiIf(");
        for (resolution, d) in &r.by_resolution {
            let res = humantime::parse_duration(resolution).unwrap_or(Duration::ZERO).as_secs();
            write!(keep, "resolution_s = {res}, {}, ", d.as_secs()).unwrap();
        }
        let default = r.rollups.map_or(u32::MAX as u64, |d| d.as_secs());
        write!(keep, "{default})").unwrap();
        Some(format!("toDateTime(least(intDiv(window_start_ns, 1000000000) + {keep}, 4294967295))"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention() -> Retention {
        let mut r = Retention { points: Some(Duration::from_secs(30 * 86_400)), ..Retention::default() };
        r.by_resolution.insert("1m".into(), Duration::from_secs(7 * 86_400).into());
        r
    }

    #[test]
    fn versions_parse_and_classify() {
        assert_eq!(ServerVersion::parse("18.16.1"), Some(ServerVersion { major: 18, minor: 16 }));
        assert!(!ServerVersion::parse("18.16.1").unwrap().is_modern());
        assert!(ServerVersion::parse("24.3.2.23").unwrap().is_modern());
        assert_eq!(ServerVersion::parse("garbage"), None);
    }

    #[test]
    fn old_servers_get_no_modern_features() {
        let r = retention();
        let ddl = Ddl { version: ServerVersion { major: 18, minor: 16 }, cluster: "c", database: "d", retention: &r };
        let all = ddl.statements().join("\n");
        for modern in ["CODEC", "TTL", "DateTime64", "LowCardinality", "Map("] {
            assert!(!all.contains(modern), "{modern} in 18.16 DDL:\n{all}");
        }
        assert!(all.contains("ReplicatedMergeTree('/clickhouse/tables/c/d/points_local/{shard}', '{replica}')"));
        assert!(all.contains("Distributed(c, d, points_local, route)"));
    }

    #[test]
    fn modern_servers_get_codecs_and_ttl_per_resolution() {
        let r = retention();
        let ddl = Ddl { version: ServerVersion { major: 24, minor: 3 }, cluster: "c", database: "d", retention: &r };
        let all = ddl.statements().join("\n");
        assert!(all.contains("CODEC(DoubleDelta, ZSTD(1))"));
        assert!(all.contains("INTERVAL 2592000 SECOND"));
        assert!(all.contains("multiIf(resolution_s = 60, 604800, 4294967295)"), "{all}");
    }
}
