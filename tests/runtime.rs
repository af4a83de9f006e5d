//! How many threads serve calls with the shipped `server.worker_threads = 0`: one per CPU the
//! process may run on, and the single-threaded runtime (no worker threads at all) when that is
//! one CPU — as when an operator pins Tollgate to a core.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use common::process::*;
use common::*;

/// What the gateway's start-up line says about its runtime.
fn runtime_line(dir: &std::path::Path) -> String {
    let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap();
    log.lines()
        .rfind(|l| l.contains("async runtime"))
        .unwrap_or_else(|| panic!("no runtime line in:\n{log}"))
        .to_string()
}

#[tokio::test]
async fn worker_threads_zero_means_one_per_cpu_the_process_may_use() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, port) = write_config(&mock.url(), dir.path(), |c| c.server.worker_threads = 0);

    let mut pinned = start_gateway_under(dir.path(), port, &["taskset", "-c", "0"]);
    let line = runtime_line(dir.path());
    assert!(
        line.contains("serving_threads=1") && line.contains("current_thread"),
        "on one CPU, the single-threaded runtime: {line}"
    );
    assert!(stop(&mut pinned));

    let cpus = std::thread::available_parallelism().unwrap().get();
    let mut free = start_gateway(dir.path(), port);
    let line = runtime_line(dir.path());
    assert!(line.contains(&format!("serving_threads={cpus}")), "{line}");
    if cpus > 1 {
        assert!(line.contains("multi_thread"), "{line}");
    }
    assert!(stop(&mut free));
}
