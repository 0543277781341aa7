//! A real Kafka-protocol broker (tansu, through `scripts/kafka`) for tests. Shared by several crates
//! through `#[path]`, so it uses only std.
#![allow(dead_code)] // each includer uses part of it

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

/// The repository's broker script, found from the package under test (cargo sets
/// `CARGO_MANIFEST_DIR` when it runs tests).
fn script() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("run under cargo test");
    std::path::Path::new(&dir)
        .ancestors()
        .map(|d| d.join("scripts/kafka"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no scripts/kafka above {dir}"))
}

fn run(env: &[(&str, String)], args: &[&str]) {
    let out =
        Command::new(script()).args(args).envs(env.iter().map(|(k, v)| (k, v))).output().expect("run scripts/kafka");
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shared test broker (`scripts/kafka start`: port 29092), started if it is not running.
pub(crate) fn shared() -> String {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| run(&[], &["start"]));
    "127.0.0.1:29092".to_string()
}

/// A broker of a test's own, on `port` with its data in `dir`, to stop and start at will.
pub(crate) struct OwnBroker {
    env: Vec<(&'static str, String)>,
    pub(crate) address: String,
}

impl OwnBroker {
    /// A broker, not started yet.
    pub(crate) fn new(dir: &std::path::Path, port: u16) -> Self {
        let env = vec![("YAFFLE_KAFKA_DIR", dir.display().to_string()), ("YAFFLE_KAFKA_PORT", port.to_string())];
        Self { env, address: format!("127.0.0.1:{port}") }
    }

    /// Starts it and waits until it answers.
    pub(crate) fn start(&self) {
        run(&self.env, &["start"]);
    }

    /// Stops it (SIGTERM, waits).
    pub(crate) fn stop(&self) {
        run(&self.env, &["stop"]);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").envs(self.env.iter().map(|(k, v)| (k, v))).output();
    }
}
