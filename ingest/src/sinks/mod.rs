//! Sinks: each reads the durable log through its own cursor and delivers at its own pace.

pub mod alert;
pub mod clickhouse;
pub mod kafka;
pub mod store;

use std::time::Duration;

use tokio::sync::watch;

/// How long to wait before retrying after a failure, doubling up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, next: initial, max }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the initial delay after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleeps; true if shutdown was requested meanwhile.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Writes `value` as JSON to `path` atomically ([`yaffle_log::durable::write_atomically`]): a crash
/// leaves the old or the new content, never a torn file, and a completed write survives a power cut.
pub(crate) fn save_json<T: serde::Serialize>(
    path: &std::path::Path,
    value: &T,
) -> Result<(), crate::error::IngestError> {
    let bytes = serde_json::to_vec(value).expect("progress serializes");
    yaffle_log::durable::write_atomically(path, &bytes).map_err(crate::error::IngestError::io(path))
}
