//! Starting and talking to a `yaffle standalone` process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_yaffle");

/// A path in this repository. Read at run time: a build cache shared by several clones may hold this
/// test compiled in another one.
pub(crate) fn repo(path: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run under cargo test")).join(path)
}

/// A free loopback port (bound and released; good enough for tests).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `yaffle standalone` (or `yaffle ingest`) with its own data directory.
pub(crate) struct Yaffle {
    pub(crate) port: u16,
    role: &'static str,
    pub(crate) data_dir: PathBuf,
    extra_env: Vec<(String, String)>,
    /// Sent with SQL requests when auth is on.
    token: Option<String>,
    child: Option<Child>,
    agent: ureq::Agent,
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl Yaffle {
    /// Starts on a free port in `data_dir`, with `env` as extra `YAFFLE_*` settings.
    pub(crate) fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_as("standalone", data_dir, env)
    }

    /// [`Yaffle::start`] of the role `yaffle <role>` (`standalone` or `ingest`).
    pub(crate) fn start_as(role: &'static str, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut y = Self {
            port: free_port(),
            role,
            data_dir: data_dir.to_path_buf(),
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            token: None,
            child: None,
            agent: agent(),
        };
        y.spawn();
        y
    }

    /// Starts with authentication on, accepting `token` (which the helpers then send).
    pub(crate) fn start_with_token(data_dir: &Path, token: &str) -> Self {
        let mut y = Self::start(data_dir, &[("YAFFLE_AUTH__TOKENS", &format!("[{token}]"))]);
        y.token = Some(token.to_string());
        y
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg(self.role)
            .env("YAFFLE_DATA_DIR", &self.data_dir)
            .env("YAFFLE_HTTP__BIND", format!("127.0.0.1:{}", self.port))
            .env("YAFFLE_SINKS__STORE__FLUSH_INTERVAL", "100ms")
            .env("RUST_LOG", std::env::var("E2E_LOG").unwrap_or("warn".into()))
            .stdout(Stdio::null())
            .stderr(log_to(&self.log()));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start yaffle"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.agent.get(&self.url("/ping")).call()
                && r.status() == 204
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("yaffle exited during start-up: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("yaffle did not answer /ping within 30 s");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its stderr, kept in its data directory (which outlives restarts).
    fn log(&self) -> PathBuf {
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
        self.data_dir.join("stderr.log")
    }

    /// The running process's id (to signal it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, then start again on the same port and data.
    pub(crate) fn kill9_and_restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        self.spawn();
    }

    /// Posts line protocol; returns the status and body.
    pub(crate) fn write(&self, path_and_query: &str, body: &str) -> (u16, String) {
        let mut r = self.agent.post(&self.url(path_and_query)).send(body).expect("write request");
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    /// Runs SQL through the HTTP API, returning the JSON rows.
    pub(crate) fn sql(&self, q: &str) -> Vec<serde_json::Value> {
        let mut req = self.agent.post(&self.url("/api/v1/sql"));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Token {t}"));
        }
        let mut r = req.send(q).expect("sql request");
        let body = r.body_mut().with_config().limit(1 << 30).read_to_string().unwrap();
        assert_eq!(r.status(), 200, "{q}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `SELECT count(*) AS n ...` until it reaches `n`; returns the final count.
    pub(crate) fn wait_count(&self, from_where: &str, n: u64, timeout: Duration) -> u64 {
        let q = format!("SELECT count(*) AS n FROM points WHERE {from_where}");
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.sql(&q)[0]["n"].as_u64().unwrap();
            if got >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Yaffle {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        show_if_failing(&self.log());
    }
}

/// A child's stderr appended to `path`, so parallel tests' logs stay apart (and out of the failure
/// report unless their own test fails).
pub(crate) fn log_to(path: &Path) -> Stdio {
    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("child log file").into()
}

/// During a panic, prints the end of a child's log with the test's failure report.
pub(crate) fn show_if_failing(path: &Path) {
    if !std::thread::panicking() {
        return;
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- last lines of {} ---", path.display());
    for line in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("{line}");
    }
}

/// Fails with an install hint when a peer program is missing.
pub(crate) fn require(program: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().unwrap().status.success();
    assert!(found, "{program} is not installed: run scripts/test-deps (the README's test command does)");
}

/// Writers posting numbered points (`load,writer=wN seq=<n>i <n+1>`) until stopped, remembering which
/// were acknowledged with 204 and counting the other answers.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<(usize, u64)>>>,
    refused: Arc<AtomicU64>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts `writers` threads posting `lines` points per request to `url`, pausing `pause` between requests.
    pub(crate) fn start(url: &str, writers: usize, lines: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let writers = (0..writers)
            .map(|w| {
                let (url, stop, acked, refused) =
                    (url.to_string(), Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&refused));
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut seq = 0u64;
                    // Bounded: stops when told, or after 200 000 requests.
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let body: String = (0..lines as u64)
                            .map(|i| format!("load,writer=w{w} seq={}i {}\n", seq + i, seq + i + 1))
                            .collect();
                        match agent.post(&url).send(&body) {
                            Ok(r) if r.status() == 204 => {
                                acked.lock().unwrap().extend((0..lines as u64).map(|i| (w, seq + i)));
                            }
                            _ => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                        seq += lines as u64;
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Self { stop, acked, refused, writers }
    }

    /// Points acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Requests not answered 204 so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Stops the writers; returns every acknowledged (writer, seq).
    pub(crate) fn stop(self) -> HashSet<(usize, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            w.join().unwrap();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// Checks that the rows of `sql` (`w` = writer tag, `s` = seq) hold every acknowledged point exactly
/// once. Rows still on their way to the store (the sink flushes on its own schedule) are waited for, up
/// to a minute; a duplicate fails at once.
pub(crate) fn assert_exactly_once(yaffle: &Yaffle, sql: &str, acked: &HashSet<(usize, u64)>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = yaffle.sql(sql);
        let mut seen = HashSet::with_capacity(rows.len());
        for r in &rows {
            let w: usize = r["w"].as_str().unwrap()[1..].parse().unwrap();
            assert!(seen.insert((w, r["s"].as_u64().unwrap())), "duplicate point {r}");
        }
        let missing = acked.difference(&seen).count();
        if missing == 0 {
            return;
        }
        let some: Vec<_> = acked.difference(&seen).take(5).collect();
        assert!(Instant::now() < deadline, "{missing} acknowledged points lost, e.g. {some:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
