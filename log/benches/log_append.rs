//! Durable log append throughput: one appender and 32 concurrent appenders (group commit), under each
//! fsync policy, with 64 KiB records (about a 1 000-line request). Run: `cargo bench -p yaffle-log`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yaffle_log::{FsyncPolicy, Log, LogConfig};

const RECORD: usize = 64 << 10;

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for (name, fsync) in [("fsync_always", FsyncPolicy::Always), ("fsync_never", FsyncPolicy::Never)] {
        let mut g = c.benchmark_group(format!("log_append/{name}"));
        g.sample_size(20);
        for concurrency in [1usize, 32] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = LogConfig { fsync, ..LogConfig::default() };
            config.cursors.store.enabled = false;
            let log = Arc::new(Log::open(dir.path(), &config, Default::default()).unwrap());
            g.throughput(Throughput::Bytes((RECORD * concurrency) as u64));
            g.bench_function(format!("{concurrency}_appenders_64KiB"), |b| {
                b.to_async(&runtime).iter(|| {
                    let log = Arc::clone(&log);
                    async move {
                        let tasks: Vec<_> = (0..concurrency)
                            .map(|_| {
                                let log = Arc::clone(&log);
                                tokio::spawn(async move { log.append(vec![7u8; RECORD]).await.unwrap() })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, append);
criterion_main!(benches);
