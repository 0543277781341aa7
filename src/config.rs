//! The configuration file: TOML with documented defaults, overridden by `YAFFLE_*` environment
//! variables (`YAFFLE_HTTP__BIND=0.0.0.0:8086` sets `http.bind`; `__` separates levels).
//! `yaffle.example.toml` at the top of the repository lists every key with its default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use yaffle_alert::AlertConfig;
use yaffle_downsample::DownsampleConfig;
use yaffle_ingest::config::{AuthConfig, HttpConfig, LimitsConfig};
use yaffle_ingest::sinks::alert::AlertSinkConfig;
use yaffle_ingest::sinks::clickhouse::ClickHouseSinkConfig;
use yaffle_ingest::sinks::kafka::KafkaSinkConfig;
use yaffle_ingest::sinks::store::StoreSinkConfig;
use yaffle_log::LogConfig;
use yaffle_query::QueryConfig;
use yaffle_store::clickhouse::ClickHouseConfig;
use yaffle_store::embedded::EmbeddedConfig;

/// The environment variable naming the config file; not a config key.
pub(crate) const CONFIG_ENV: &str = "YAFFLE_CONFIG";

/// Everything `yaffle standalone` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the log, the store and the field types live. Relative paths inside other sections are
    /// relative to it.
    pub(crate) data_dir: PathBuf,
    /// HTTP API.
    pub(crate) http: HttpConfig,
    /// Request limits.
    pub(crate) limits: LimitsConfig,
    /// Authentication.
    pub(crate) auth: AuthConfig,
    /// Durable log.
    pub(crate) log: LogConfig,
    /// Store.
    pub(crate) store: StoreConfig,
    /// Sinks.
    pub(crate) sinks: SinksConfig,
    pub(crate) alert: AlertConfig,
    /// Downsampling: `yaffle downsample` workers, backfill, and standalone's in-process rollups.
    pub(crate) downsample: DownsampleConfig,
    /// The Prometheus query API.
    pub(crate) query: QueryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            sinks: SinksConfig::default(),
            alert: AlertConfig::default(),
            downsample: DownsampleConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

/// Which store, and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// `embedded` (default, no external service) or `clickhouse` (a cluster, see `[store.clickhouse]`).
    pub(crate) backend: StoreBackend,
    /// How often retention is enforced.
    #[serde(with = "humantime_serde")]
    pub(crate) retention_check_interval: Duration,
    /// The embedded store.
    pub(crate) embedded: EmbeddedConfig,
    /// The ClickHouse cluster.
    pub(crate) clickhouse: ClickHouseConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            retention_check_interval: Duration::from_secs(60),
            embedded: EmbeddedConfig::default(),
            clickhouse: ClickHouseConfig::default(),
        }
    }
}

/// Store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreBackend {
    /// Parquet files queried with DataFusion.
    #[default]
    Embedded,
    /// A ClickHouse cluster.
    #[serde(rename = "clickhouse")]
    ClickHouse,
}

/// The sinks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SinksConfig {
    /// The store sink (embedded store).
    pub(crate) store: StoreSinkConfig,
    /// The store sink's batching and retries when the store is ClickHouse.
    pub(crate) clickhouse: ClickHouseSinkConfig,
    /// The tee into Kafka for the downsampling workers.
    pub(crate) kafka: KafkaSinkConfig,
    /// The evaluators the alert sink delivers to.
    pub(crate) alert: AlertSinkConfig,
}

impl Config {
    /// Loads the defaults, then `file` if given, then `YAFFLE_*` variables, and validates the result.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::new();
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            figment = figment.merge(Toml::file(f));
        }
        let env = Env::prefixed("YAFFLE_").split("__").filter(|k| !k.as_str().eq_ignore_ascii_case("config"));
        let config: Config = figment.merge(env).extract().map_err(|e| {
            let source = file.map_or_else(|| "the environment".to_string(), |f| f.display().to_string());
            format!("invalid configuration in {source}: {e}")
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        self.http.validate()?;
        self.store.embedded.validate()?;
        self.sinks.store.validate()?;
        self.sinks.clickhouse.validate()?;
        self.sinks.kafka.validate()?;
        self.alert.validate()?;
        self.query.validate()?;
        self.downsample.validate()?;
        self.sinks.alert.validate()?;
        if self.store.backend == StoreBackend::ClickHouse {
            self.store.clickhouse.validate()?;
        }
        if self.store.retention_check_interval.is_zero() {
            return Err("store.retention_check_interval must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures must return figment's (large) error
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_documents_the_defaults() {
        // Inside a jail: jails run one at a time, so another test's variables cannot leak in.
        figment::Jail::expect_with(|_| {
            let example = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("yaffle.example.toml");
            let config = Config::load(Some(&example)).map_err(figment::Error::from)?;
            assert_eq!(config, Config::default(), "yaffle.example.toml must list the defaults");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[http]\nbindd = \"x\"\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err();
        assert!(e.contains("bindd"), "{e}");
        std::fs::write(&file, "[log]\nfsync = \"sometimes\"\n").unwrap();
        let e = Config::load(Some(&file)).unwrap_err();
        assert!(e.contains("fsync must be"), "{e}");
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).unwrap_err().contains("does not exist"));
    }

    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "data_dir = \"/from/file\"\n[http]\nbind = \"127.0.0.1:1\"\n")?;
            jail.set_env("YAFFLE_HTTP__BIND", "127.0.0.1:2");
            jail.set_env("YAFFLE_LIMITS__MAX_POINTS_PER_REQUEST", "7");
            jail.set_env("YAFFLE_CONFIG", "ignored.toml");
            let c = Config::load(Some(Path::new("c.toml"))).map_err(figment::Error::from)?;
            assert_eq!(c.http.bind.port(), 2);
            assert_eq!(c.limits.max_points_per_request, 7);
            assert_eq!(c.data_dir, PathBuf::from("/from/file"));
            Ok(())
        });
    }
}
