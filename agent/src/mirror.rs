//! A local copy of the objects of one kind (optionally narrowed by a field
//! selector), kept by shoal-client's list+watch loop (which re-lists when the
//! watch is too old or lagging, and resumes on the next controller after a
//! break), published as snapshots on a `tokio::sync::watch` channel: `None`
//! until the first list succeeded, then the whole set after every change.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_api::Resource;
use shoal_client::watcher::{EventKind, Machine};
use shoal_client::{Client, ClientError, ListParams, WatchOutput, Watcher};
use tokio::sync::watch;
use tracing::warn;

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
    ctl: Arc<Client>,
    field_selector: &str,
) -> watch::Receiver<Published<T>> {
    start_with(
        ctl,
        ListParams {
            field_selector: field_selector.to_string(),
            ..ListParams::default()
        },
    )
}

/// Starts mirroring the objects of kind `T` that `params` selects.
pub fn start_with<T: Resource + Send + Sync + 'static>(
    ctl: Arc<Client>,
    params: ListParams,
) -> watch::Receiver<Published<T>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run::<T>(Client::clone(&ctl), params, tx));
    rx
}

async fn run<T: Resource + Send + Sync + 'static>(
    ctl: Client,
    params: ListParams,
    tx: watch::Sender<Published<T>>,
) {
    let kind = T::KIND.to_string();
    // The agent never gives up on its controllers: no failure limit (the pause between
    // attempts is capped at 2 s).
    let mut w = Watcher::<T>::typed(ctl.clone(), params.clone(), Machine::new(None));
    let mut snap = Snapshot::new();
    loop {
        let next = tokio::select! {
            n = w.next() => n,
            // Nobody reads this mirror any more: stop, which closes the watch.
            _ = tx.closed() => return,
        };
        match next {
            Ok(WatchOutput::Listed { items, .. }) => {
                snap = items.into_iter().map(|o| (key_of(&o), o)).collect();
            }
            Ok(WatchOutput::Event {
                kind: EventKind::Deleted,
                object,
                ..
            }) => {
                snap.remove(&key_of(&object));
            }
            Ok(WatchOutput::Event { object, .. }) => {
                snap.insert(key_of(&object), object);
            }
            Err(e @ ClientError::Decode { .. }) => {
                // One object that does not decode: skip it, the watch goes on.
                warn!("{kind} mirror: {e}");
                continue;
            }
            Err(e) => {
                // An answer no member can cure (e.g. a rejected selector): start over
                // with a list after a pause rather than stop mirroring.
                warn!("{kind} mirror: {e}; listing again in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                }
                w = Watcher::<T>::typed(ctl.clone(), params.clone(), Machine::new(None));
                continue;
            }
        }
        tx.send_replace(Some(Arc::new(snap.clone())));
    }
}
