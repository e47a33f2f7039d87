//! The endpoints reconciler: for every Service with a selector, an Endpoints object of
//! the same name listing the selected pods that have an IP — ready ones in `addresses`,
//! the others (not Ready, or terminating) in `notReadyAddresses` — with the service's
//! ports resolved per pod (a named `targetPort` is looked up among the pod's container
//! ports, so pods resolving to different numbers land in different subsets). The
//! Endpoints is owned by its Service and deleted when the Service is gone or loses its
//! selector. Services without a selector get nothing: their Endpoints are the user's.

use std::collections::BTreeMap;

use shoal_api::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, IntOrString, Kind, Object,
    ObjectMeta, ObjectReference, OwnerReference, Pod, Protocol, Service,
};

use super::action::{Action, is_pod_ready, is_terminal, namespace, revision};
use super::gc::Orphan;

/// What one pass of the endpoints reconciler found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointsPlan {
    /// Creates and updates of Endpoints whose content changed.
    pub actions: Vec<Action>,
    /// Endpoints whose owning Service looks gone (deleted once a read confirms that no
    /// Service of that name exists).
    pub orphans: Vec<Orphan>,
}

/// The store key of an Endpoints object.
fn endpoints_key(ns: &str, name: &str) -> String {
    shoal_api::key_for(Kind::Endpoints, ns, name)
}

/// Pods of namespace `ns` (a range of the key-ordered map).
fn pods_in<'a>(pods: &'a BTreeMap<String, Pod>, ns: &str) -> impl Iterator<Item = &'a Pod> {
    let prefix = format!("Pod/{ns}/");
    pods.range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
        .map(|(_, p)| p)
}

/// The port number `target` means on pod `p`: a number as is, a name looked up among the
/// pod's container ports of the same protocol (None when no container has it).
pub fn resolve_target(p: &Pod, target: &IntOrString, protocol: Protocol) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => p
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|cp| cp.name.as_deref() == Some(name.as_str()) && cp.protocol == protocol)
            .map(|cp| cp.container_port),
    }
}

/// The subsets of `svc`'s Endpoints given all pods (any namespace), in a stable order:
/// subsets by their ports, addresses by IP then pod name.
pub fn subsets(svc: &Service, pods: &BTreeMap<String, Pod>) -> Vec<EndpointSubset> {
    let ns = namespace(&svc.metadata);
    type PortKey = Vec<(Option<String>, i32, Protocol)>;
    let mut groups: BTreeMap<PortKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for p in pods_in(pods, ns) {
        if is_terminal(p)
            || !svc
                .spec
                .selector
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        {
            continue;
        }
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let ports: PortKey = svc
            .spec
            .ports
            .iter()
            .filter_map(|sp| {
                resolve_target(p, &sp.target(), sp.protocol)
                    .map(|n| (sp.name.clone(), n, sp.protocol))
            })
            .collect();
        if ports.is_empty() && !svc.spec.ports.is_empty() {
            continue;
        }
        let addr = EndpointAddress {
            ip: ip.to_string(),
            hostname: p
                .spec
                .hostname
                .clone()
                .filter(|_| p.spec.subdomain.as_deref() == Some(svc.metadata.name.as_str())),
            node_name: p.spec.node_name.clone().filter(|n| !n.is_empty()),
            target_ref: Some(ObjectReference {
                kind: Kind::Pod,
                namespace: ns.to_string(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
            }),
        };
        let (ready, not_ready) = groups.entry(ports).or_default();
        if p.metadata.deletion_timestamp.is_none() && is_pod_ready(p) {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    let order = |a: &EndpointAddress| {
        (
            a.ip.parse::<std::net::Ipv4Addr>().ok(),
            a.ip.clone(),
            a.target_ref.as_ref().map(|r| r.name.clone()),
        )
    };
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by_key(order);
            not_ready.sort_by_key(order);
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name,
                        port,
                        protocol,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The owner reference an Endpoints gets from its Service.
fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: shoal_api::API_VERSION.to_string(),
        kind: Kind::Service,
        name: svc.metadata.name.clone(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: true,
        block_owner_deletion: false,
    }
}

/// Plans one pass: creates or updates the Endpoints of every Service with a selector
/// whose content (subsets, labels, owner) differs from what is stored, and lists the
/// Endpoints owned by a Service that no longer exists (by key and uid).
pub fn plan(
    services: &BTreeMap<String, Service>,
    endpoints: &BTreeMap<String, Endpoints>,
    pods: &BTreeMap<String, Pod>,
) -> EndpointsPlan {
    let mut out = EndpointsPlan::default();
    for svc in services.values() {
        if svc.spec.selector.is_empty()
            || svc.metadata.uid.is_none()
            || svc.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let ns = namespace(&svc.metadata);
        let key = endpoints_key(ns, &svc.metadata.name);
        let subsets = subsets(svc, pods);
        let owners = vec![owner(svc)];
        match endpoints.get(&key) {
            None => out
                .actions
                .push(Action::Create(Object::Endpoints(Endpoints {
                    metadata: ObjectMeta {
                        labels: svc.metadata.labels.clone(),
                        owner_references: owners,
                        ..ObjectMeta::named(ns, &svc.metadata.name)
                    },
                    subsets,
                }))),
            Some(cur) => {
                if cur.subsets != subsets
                    || cur.metadata.labels != svc.metadata.labels
                    || cur.metadata.owner_references != owners
                {
                    let mut e = cur.clone();
                    e.subsets = subsets;
                    e.metadata.labels = svc.metadata.labels.clone();
                    e.metadata.owner_references = owners;
                    out.actions.push(Action::Update(Object::Endpoints(e)));
                }
            }
        }
    }
    for (key, e) in endpoints {
        let Some(o) = e
            .metadata
            .controller_owner()
            .filter(|o| o.kind == Kind::Service)
        else {
            continue;
        };
        let svc_key = shoal_api::key_for(Kind::Service, namespace(&e.metadata), &o.name);
        match services.get(&svc_key) {
            // A Service that lost its selector: its Endpoints (ours) go at once.
            Some(svc)
                if svc.spec.selector.is_empty()
                    && svc.metadata.uid.as_deref() == Some(o.uid.as_str()) =>
            {
                out.actions.push(Action::Delete {
                    key: key.clone(),
                    revision: revision(&e.metadata),
                });
                continue;
            }
            // A Service of that name (even a re-created one) takes its Endpoints over.
            Some(_) => continue,
            None => out.orphans.push(Orphan {
                action: Action::Delete {
                    key: key.clone(),
                    revision: revision(&e.metadata),
                },
                owner_key: svc_key,
                owner_uid: o.uid.clone(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn svc(name: &str, spec: Value) -> (String, Service) {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                         "labels": {"team": "a"}},
            "spec": spec
        }))
        .unwrap();
        (format!("Service/default/{name}"), s)
    }

    /// A pod with labels `app=web`, `ip` (None: no IP yet), readiness and a named port.
    fn pod(name: &str, ip: Option<&str>, ready: bool, http_port: i32) -> (String, Pod) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "b",
                     "ports": [{"name": "http", "containerPort": http_port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap();
        (format!("Pod/default/{name}"), p)
    }

    fn ips(list: &[EndpointAddress]) -> Vec<&str> {
        list.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_not_ready_and_named_ports() {
        let services = BTreeMap::from([svc(
            "web",
            json!({"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "admin", "port": 9000}]}),
        )]);
        let mut pods = BTreeMap::from([
            pod("a", Some("10.244.0.12"), true, 8080),
            pod("b", Some("10.244.0.3"), true, 8080),
            pod("c", Some("10.244.1.5"), false, 8080),
            pod("d", None, true, 8080),
            pod("e", Some("10.244.2.7"), true, 8081),
        ]);
        // Terminating: not ready. Finished: not listed at all. Other labels: not selected.
        let (k, mut f) = pod("f", Some("10.244.2.8"), true, 8080);
        f.metadata.deletion_timestamp = Some(chrono::Utc::now());
        pods.insert(k, f);
        let (k, mut g) = pod("g", Some("10.244.2.9"), true, 8080);
        g.status.as_mut().unwrap().phase = shoal_api::PodPhase::Failed;
        pods.insert(k, g);
        let (k, mut h) = pod("h", Some("10.244.2.10"), true, 8080);
        h.metadata.labels.insert("app".into(), "db".into());
        pods.insert(k, h);

        let p = plan(&services, &BTreeMap::new(), &pods);
        assert!(p.orphans.is_empty());
        let [Action::Create(Object::Endpoints(e))] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(e.metadata.name, "web");
        assert_eq!(e.metadata.labels["team"], "a");
        assert_eq!(e.metadata.owner_references[0].uid, "u-web");
        e.validate().unwrap();
        assert_eq!(e.subsets.len(), 2, "{:#?}", e.subsets);
        let s0 = &e.subsets[0];
        assert_eq!(
            s0.ports,
            vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: 8080,
                    protocol: Protocol::Tcp
                },
                EndpointPort {
                    name: Some("admin".into()),
                    port: 9000,
                    protocol: Protocol::Tcp
                },
            ]
        );
        // Sorted numerically by IP.
        assert_eq!(ips(&s0.addresses), vec!["10.244.0.3", "10.244.0.12"]);
        assert_eq!(
            ips(&s0.not_ready_addresses),
            vec!["10.244.1.5", "10.244.2.8"]
        );
        assert_eq!(s0.addresses[0].node_name.as_deref(), Some("n1"));
        assert_eq!(s0.addresses[0].target_ref.as_ref().unwrap().name, "b");
        let s1 = &e.subsets[1];
        assert_eq!(s1.ports[0].port, 8081);
        assert_eq!(ips(&s1.addresses), vec!["10.244.2.7"]);

        // Stored and unchanged: nothing to write. A pod turning ready: an update.
        let mut stored = e.clone();
        stored.metadata.resource_version = Some("7".into());
        let eps = BTreeMap::from([("Endpoints/default/web".to_string(), stored)]);
        assert!(plan(&services, &eps, &pods).actions.is_empty());
        let c = pods.get_mut("Pod/default/c").unwrap();
        c.status.as_mut().unwrap().conditions[0].status = shoal_api::ConditionStatus::True;
        let p = plan(&services, &eps, &pods);
        let [Action::Update(Object::Endpoints(u))] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(u.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            ips(&u.subsets[0].addresses),
            vec!["10.244.0.3", "10.244.0.12", "10.244.1.5"]
        );
    }

    #[test]
    fn unresolvable_ports_empty_selectors_and_orphans() {
        let (_, web) = svc(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "nope"}]}),
        );
        let pods = BTreeMap::from([pod("a", Some("10.244.0.2"), true, 8080)]);
        // No pod has the named port: empty Endpoints.
        assert!(subsets(&web, &pods).is_empty());
        let (_, manual) = svc("manual", json!({"ports": [{"port": 80}]}));
        let services = BTreeMap::from([
            ("Service/default/web".to_string(), web),
            ("Service/default/manual".to_string(), manual),
        ]);
        let ep = |name: &str, owner_uid: Option<&str>| -> (String, Endpoints) {
            let owners = match owner_uid {
                Some(u) => json!([{"kind": "Service", "name": name, "uid": u, "controller": true}]),
                None => json!([]),
            };
            let e: Endpoints = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "resourceVersion": "4",
                             "ownerReferences": owners}
            }))
            .unwrap();
            (format!("Endpoints/default/{name}"), e)
        };
        let mut services = services;
        let (k, unselected) = svc("unselected", json!({"ports": [{"port": 80}]}));
        services.insert(k, unselected);
        let eps = BTreeMap::from([
            ep("manual", None),
            ep("gone", Some("u-gone")),
            ep("web", Some("u-web")),
            ep("unselected", Some("u-unselected")),
        ]);
        let p = plan(&services, &eps, &pods);
        // The service without a selector gets nothing; the user's Endpoints stay, ours go.
        let [
            Action::Update(Object::Endpoints(u)),
            Action::Delete { key, revision: 4 },
        ] = p.actions.as_slice()
        else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(u.metadata.name, "web");
        assert_eq!(key, "Endpoints/default/unselected");
        assert_eq!(
            p.orphans,
            vec![Orphan {
                action: Action::Delete {
                    key: "Endpoints/default/gone".into(),
                    revision: 4
                },
                owner_key: "Service/default/gone".into(),
                owner_uid: "u-gone".into(),
            }]
        );
    }
}
