//! The `ValueCodec` seam: values are sealed before they are proposed (the state machine,
//! hence the log, snapshots and backups, holds the sealed form) and opened for every
//! get, list, watch event and write outcome.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Value, json};
use shoal_store::{Consistency, StoreConfig, StoreError, ValueCodec, Write};

/// Seals `Secret/` keys by moving `data` to `sealed` reversed (a stand-in for a cipher).
#[derive(Debug)]
struct Reverse;

fn rev(s: &str) -> String {
    s.chars().rev().collect()
}

impl ValueCodec for Reverse {
    fn seal(&self, key: &str, mut v: Value) -> Result<Value, StoreError> {
        if key.starts_with("Secret/")
            && let Some(d) = v.as_object_mut().and_then(|m| m.remove("data"))
        {
            v["sealed"] = rev(&d.to_string()).into();
        }
        Ok(v)
    }
    fn open(&self, key: &str, mut v: Value) -> Result<Value, StoreError> {
        if key.starts_with("Secret/")
            && let Some(s) = v.as_object_mut().and_then(|m| m.remove("sealed"))
        {
            let text = rev(s.as_str().unwrap_or_default());
            v["data"] =
                serde_json::from_str(&text).map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        Ok(v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_values_are_opened_on_every_read() {
    let dir = tempfile::Builder::new()
        .prefix("shoal-store-codec-")
        .tempdir()
        .expect("tempdir");
    let mut cfg = StoreConfig::new(3, dir.path(), "127.0.0.1:0");
    cfg.codec = Some(Arc::new(Reverse));
    let m = shoal_store::testing::spawn_member(cfg)
        .await
        .expect("spawn");
    m.store.bootstrap().await.expect("bootstrap");
    let mut watch = m.store.watch("Secret/", None).await.expect("watch");
    let secret = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "plainvalue"}});
    let out = m
        .store
        .write(vec![Write::Create {
            key: "Secret/default/s".into(),
            object: secret.clone(),
        }])
        .await
        .expect("write");
    assert_eq!(
        out[0].object["data"], secret["data"],
        "write outcome opened"
    );
    let got = m
        .store
        .get("Secret/default/s", Consistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got["data"], secret["data"]);
    let (items, _) = m
        .store
        .list("Secret/", Consistency::Local)
        .await
        .expect("list");
    assert_eq!(items[0]["data"], secret["data"]);
    let ev = watch.next().await.expect("event").expect("ok");
    assert_eq!(ev.object["data"], secret["data"]);
    // What is stored (and in a backup) is the sealed form.
    let backup = m.store.backup().await.expect("backup");
    let stored = &backup
        .objects
        .iter()
        .find(|(k, _)| k == "Secret/default/s")
        .expect("in backup")
        .1;
    assert!(stored.get("data").is_none(), "{stored}");
    assert!(!stored.to_string().contains("plainvalue"), "{stored}");
    m.stop().await.expect("stop");
}
