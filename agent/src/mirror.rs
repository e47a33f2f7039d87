//! A local copy of the objects of one kind (optionally narrowed by a field
//! selector), kept by list + watch (re-listing when the watch is too old or
//! breaks), published as snapshots on a `tokio::sync::watch` channel: `None`
//! until the first list succeeded, then the whole set after every change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::Resource;
use shoal_proto::cluster_client::ClusterClient;
use shoal_proto::{ListRequest, WatchRequest};
use tokio::sync::watch;
use tonic::Code;
use tracing::{debug, warn};

use crate::controllers::{ControllerError, Controllers, REQUEST_TIMEOUT, decode};

/// Objects by `namespace/name`.
pub type Snapshot<T> = BTreeMap<String, T>;

/// The `namespace/name` key of an object.
pub fn key_of<T: Resource>(o: &T) -> String {
    let m = o.metadata();
    format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name)
}

/// What a mirror publishes: `None` until listed.
pub type Published<T> = Option<Arc<Snapshot<T>>>;

/// Starts mirroring kind `T` (all objects, or those matching
/// `field_selector`); the receiver sees a new snapshot after every change.
pub fn start<T: Resource + Send + Sync + 'static>(
    ctl: Arc<Controllers>,
    field_selector: &str,
) -> watch::Receiver<Published<T>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run::<T>(ctl, field_selector.to_string(), tx));
    rx
}

async fn list<T: Resource>(
    ctl: &Controllers,
    field_selector: &str,
) -> Result<(Snapshot<T>, u64), ControllerError> {
    let req = ListRequest {
        kind: T::KIND.to_string(),
        namespace: String::new(),
        label_selector: String::new(),
        field_selector: field_selector.to_string(),
        stale: false,
    };
    let resp = ctl
        .call(|ch| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(REQUEST_TIMEOUT);
            async move { ClusterClient::new(ch).list(r).await }
        })
        .await?;
    let mut out = Snapshot::new();
    for j in &resp.items_json {
        let o: T = decode(j)?;
        out.insert(key_of(&o), o);
    }
    Ok((out, resp.resource_version))
}

async fn run<T: Resource + Send + Sync + 'static>(
    ctl: Arc<Controllers>,
    field_selector: String,
    tx: watch::Sender<Published<T>>,
) {
    let kind = T::KIND.to_string();
    loop {
        let (mut snap, rev) = match list::<T>(&ctl, &field_selector).await {
            Ok(r) => r,
            Err(e) => {
                warn!("listing {kind}: {e}");
                ctl.fail_over();
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tx.send_replace(Some(Arc::new(snap.clone())));
        let req = WatchRequest {
            kind: kind.clone(),
            namespace: String::new(),
            label_selector: String::new(),
            field_selector: field_selector.clone(),
            resource_version: rev,
        };
        let stream = ctl
            .call(|ch| {
                let req = req.clone();
                async move { ClusterClient::new(ch).watch(req).await }
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("watching {kind}: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    match decode::<T>(&ev.object_json) {
                        Ok(o) => {
                            let k = key_of(&o);
                            if ev.r#type == "DELETED" {
                                snap.remove(&k);
                            } else {
                                snap.insert(k, o);
                            }
                        }
                        Err(e) => warn!("{kind} watch event: {e}"),
                    }
                    tx.send_replace(Some(Arc::new(snap.clone())));
                }
                Ok(None) => break,
                Err(s) => {
                    if s.code() != Code::OutOfRange {
                        warn!("{kind} watch on {}: {s}", ctl.address());
                        ctl.fail_over();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    } else {
                        debug!("{kind} watch too old; re-listing");
                    }
                    break;
                }
            }
        }
    }
}
