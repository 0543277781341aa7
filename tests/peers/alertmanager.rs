//! A real Alertmanager (Debian `prometheus-alertmanager`) for tests: one webhook receiver,
//! `group_wait: 0s`, no clustering. Shared by the alert crate's tests and the end-to-end tests, so it
//! uses only std.
#![allow(dead_code)] // each includer uses part of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Alertmanager {
    child: Child,
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Alertmanager forwarding every alert group (grouped by alert name) to `webhook` (resolved
/// ones too), and waits until it answers `/-/ready`.
pub(crate) fn start(webhook: &str) -> Alertmanager {
    start_grouped_by(webhook, "[alertname]")
}

/// As [`start`], grouping by `group_by` (YAML, e.g. `['...']` for a group per alert).
pub(crate) fn start_grouped_by(webhook: &str, group_by: &str) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: {group_by}\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager must be installed (scripts/test-deps installs it)");
    let am = Alertmanager { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready(port) {
        assert!(Instant::now() < deadline, "alertmanager did not become ready on {}", am.url);
        std::thread::sleep(Duration::from_millis(100));
    }
    am
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /-/ready HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    let mut answer = String::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
