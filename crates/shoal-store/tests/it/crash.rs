//! SIGKILL a process writing to a store, reopen its data dir: every acknowledged write is there.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_store::{Consistency, Store, StoreConfig};

/// Kills the helper on drop (also when the test panics).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_writer_loses_no_acknowledged_write() {
    crate::util::init_logs();
    let dir = tempfile::Builder::new()
        .prefix("shoal-store-crash-")
        .tempdir()
        .expect("tempdir");
    let mut acked: Vec<(String, u64)> = Vec::new();
    for round in 0..3 {
        let mut child = ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_shoal-store-crash-helper"))
                .arg(dir.path())
                .arg("40")
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn helper"),
        );
        let stdout = child.0.stdout.take().expect("stdout");
        let wanted = 60 + 37 * round;
        let reader = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.len() < wanted && Instant::now() < deadline {
                match lines.next() {
                    Some(Ok(l)) => {
                        if let Some(rest) = l.strip_prefix("acked ") {
                            let mut p = rest.split(' ');
                            let key = p.next().expect("key").to_owned();
                            let rev: u64 = p.next().expect("rev").parse().expect("rev number");
                            got.push((key, rev));
                        }
                    }
                    _ => break,
                }
            }
            (got, lines)
        });
        let (got, lines) = reader.await.expect("reader");
        assert_eq!(
            got.len(),
            wanted,
            "round {round}: helper acknowledged only {got:?}"
        );
        // SIGKILL while it keeps writing.
        child.0.kill().expect("sigkill");
        let status = child.0.wait().expect("wait");
        drop(lines);
        println!("round {round}: {} acked, killed with {status:?}", got.len());
        acked.extend(got);

        let mut cfg = StoreConfig::new(1, dir.path(), "127.0.0.1:1");
        cfg.peer_tls = Some(shoal_store::testing::test_peer_tls(1));
        let store = Store::open(cfg).await.expect("reopen after sigkill");
        store.bootstrap().await.expect("bootstrap after sigkill");
        for (key, rev) in &acked {
            let obj = store
                .get(key, Consistency::Linearizable)
                .await
                .expect("get")
                .unwrap_or_else(|| {
                    panic!("round {round}: acknowledged {key} (revision {rev}) lost after SIGKILL")
                });
            assert_eq!(
                obj["metadata"]["resourceVersion"],
                serde_json::json!(rev.to_string())
            );
        }
        let counter = store
            .get("ConfigMap/crash/counter", Consistency::Linearizable)
            .await
            .expect("get")
            .expect("counter");
        let last_acked = acked.last().expect("acked").1;
        let counter_rev: u64 = counter["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .parse()
            .expect("rv number");
        assert!(
            counter_rev >= last_acked,
            "counter at {counter_rev}, last acked {last_acked}"
        );
        store.shutdown().await.expect("shutdown");
    }
}
