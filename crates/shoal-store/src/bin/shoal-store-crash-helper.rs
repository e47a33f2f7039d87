//! Test helper for crash recovery: runs a single-member store on a data dir and writes until
//! killed, printing `acked <key> <revision>` after every acknowledged write. Used by the
//! SIGKILL test in `tests/it/crash.rs`; not part of the product.
//!
//! Usage: `shoal-store-crash-helper <data-dir> <snapshot-every>`

use std::io::Write as _;

use serde_json::json;
use shoal_store::{Consistency, Store, StoreConfig, Write};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: shoal-store-crash-helper <data-dir> <snapshot-every>")?;
    let snapshot_every: u64 = args.next().ok_or("missing <snapshot-every>")?.parse()?;
    let mut cfg = StoreConfig::new(1, dir, "127.0.0.1:1");
    cfg.snapshot_every = snapshot_every;
    cfg.keep_logs_after_snapshot = 10;
    cfg.peer_tls = Some(shoal_store::testing::test_peer_tls(1));
    let store = Store::open(cfg).await?;
    store.bootstrap().await?;
    let (existing, _) = store.list("Pod/crash/", Consistency::Linearizable).await?;
    let mut i = existing.len();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {i}")?;
    out.flush()?;
    loop {
        let key = format!("Pod/crash/k{i:06}");
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("k{i:06}"), "namespace": "crash"}, "spec": {"n": i}});
        let counter = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counter", "namespace": "crash"}, "data": {"last": key}});
        let res = store
            .write(vec![
                Write::Create {
                    key: key.clone(),
                    object,
                },
                Write::Put {
                    key: "ConfigMap/crash/counter".into(),
                    object: counter,
                },
            ])
            .await?;
        writeln!(out, "acked {key} {}", res[0].revision)?;
        out.flush()?;
        i += 1;
    }
}
