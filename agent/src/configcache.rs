//! The node's copies of the Secrets and ConfigMaps its pods refer to, so that starting a
//! container and refreshing a pod's config volumes (every 2 s) read memory, not the
//! controllers (like the kubelet's watch-based Secret and ConfigMap managers).
//!
//! Each object has its own [`crate::mirror`] (a list + watch narrowed to one name: the
//! node authorizer lets a node list and watch a Secret or ConfigMap only by name, and
//! only while a pod bound to it refers to it). [`ConfigCache::sync`] starts the mirrors
//! of the objects the node's pods refer to and drops the others (a dropped mirror closes
//! its watch). A read whose mirror has not listed yet (the pod just arrived) is a get
//! from the controllers, so a new pod sees its objects at least as fresh as the pod.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use shoal_api::podconfig::ConfigRefs;
use shoal_api::{ConfigMap, Pod, Resource, Secret};
use shoal_client::{Client, ClientError, ListParams};
use tokio::sync::watch;

use crate::mirror::{self, Published};

/// An object a pod refers to: its namespace and name.
pub type ObjectRef = (String, String);

/// The Secrets and ConfigMaps a set of pods refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Secrets (env, volumes and `imagePullSecrets`).
    pub secrets: BTreeSet<ObjectRef>,
    /// ConfigMaps (env and volumes).
    pub config_maps: BTreeSet<ObjectRef>,
}

/// What `pods` refer to, each in its pod's namespace. Pure.
pub fn wanted<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Wanted {
    let mut w = Wanted::default();
    for p in pods {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let refs = ConfigRefs::of(&p.spec);
        let at = |n: &String| (ns.to_string(), n.clone());
        w.secrets
            .extend(refs.secrets.iter().chain(&refs.pull_secrets).map(at));
        w.config_maps.extend(refs.config_maps.iter().map(at));
    }
    w
}

type Mirrors<T> = BTreeMap<ObjectRef, watch::Receiver<Published<T>>>;

/// Mirrors of the Secrets and ConfigMaps the node's pods refer to.
#[derive(Debug)]
pub struct ConfigCache {
    ctl: Arc<Client>,
    secrets: Mutex<Mirrors<Secret>>,
    config_maps: Mutex<Mirrors<ConfigMap>>,
}

impl ConfigCache {
    /// An empty cache reading through `ctl`.
    pub fn new(ctl: Arc<Client>) -> Self {
        Self {
            ctl,
            secrets: Mutex::default(),
            config_maps: Mutex::default(),
        }
    }

    /// Keeps a mirror of exactly the objects `pods` refer to.
    pub fn sync<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) {
        let w = wanted(pods);
        keep(&self.ctl, &mut lock(&self.secrets), &w.secrets);
        keep(&self.ctl, &mut lock(&self.config_maps), &w.config_maps);
    }

    /// Secret `ns/name`: from its mirror once listed, else from the controllers.
    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ClientError> {
        read(&self.ctl, &self.secrets, ns, name).await
    }

    /// ConfigMap `ns/name`: from its mirror once listed, else from the controllers.
    pub async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ClientError> {
        read(&self.ctl, &self.config_maps, ns, name).await
    }
}

/// Starts the mirrors of `want` missing from `mirrors` and drops those not in it.
fn keep<T: Resource + Send + Sync + 'static>(
    ctl: &Arc<Client>,
    mirrors: &mut Mirrors<T>,
    want: &BTreeSet<ObjectRef>,
) {
    mirrors.retain(|r, _| want.contains(r));
    for r in want {
        if !mirrors.contains_key(r) {
            let params = ListParams {
                namespace: r.0.clone(),
                field_selector: format!("metadata.name={}", r.1),
                ..ListParams::default()
            };
            mirrors.insert(r.clone(), mirror::start_with::<T>(ctl.clone(), params));
        }
    }
}

async fn read<T: Resource + Clone>(
    ctl: &Client,
    mirrors: &Mutex<Mirrors<T>>,
    ns: &str,
    name: &str,
) -> Result<Option<T>, ClientError> {
    let listed = lock(mirrors)
        .get(&(ns.to_string(), name.to_string()))
        .and_then(|rx| rx.borrow().clone());
    if let Some(snap) = listed {
        crate::metrics::observe_config_read("cache");
        return Ok(snap.get(&format!("{ns}/{name}")).cloned());
    }
    crate::metrics::observe_config_read("controller");
    ctl.get::<T>(ns, name).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn wanted_collects_every_reference_in_its_pods_namespace() {
        let a = pod(
            "prod",
            serde_json::json!({
                "imagePullSecrets": [{"name": "regcred"}],
                "containers": [{"name": "c", "image": "i",
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}],
                    "envFrom": [{"configMapRef": {"name": "more"}}]}],
                "volumes": [{"name": "v", "secret": {"secretName": "tls"}},
                            {"name": "w", "projected": {"sources": [{"configMap": {"name": "proj"}}]}}],
            }),
        );
        let b = pod(
            "default",
            serde_json::json!({"containers": [{"name": "c", "image": "i",
                "envFrom": [{"secretRef": {"name": "db"}}]}]}),
        );
        let w = wanted([&a, &b]);
        let refs = |v: &[(&str, &str)]| -> BTreeSet<ObjectRef> {
            v.iter()
                .map(|(n, m)| (n.to_string(), m.to_string()))
                .collect()
        };
        assert_eq!(
            w.secrets,
            refs(&[
                ("default", "db"),
                ("prod", "db"),
                ("prod", "regcred"),
                ("prod", "tls")
            ])
        );
        assert_eq!(
            w.config_maps,
            refs(&[("prod", "cfg"), ("prod", "more"), ("prod", "proj")])
        );
        assert_eq!(wanted([]), Wanted::default());
    }
}
