//! The built-in local-path provisioner and volume binder (Kubernetes'
//! `WaitForFirstConsumer`): a PersistentVolumeClaim stays `Pending` until a pod using it
//! is bound to a node; then a PersistentVolume `pvc-<claim uid>` on that node is made and
//! bound to it (its directory, `DATA/volumes/<name>`, is made by the node's agent when the
//! pod starts). A bound claim pins its pods to the volume's node ([`pod_volume_node`],
//! which the scheduler asks). A volume whose claim is gone, once no pod mounts the claim
//! any more, is `Released`; the node's agent removes the directory and the volume when
//! its reclaim policy is `Delete`.

use std::collections::{BTreeMap, BTreeSet};

use shoal_api::{
    AccessMode, ClaimPhase, ClaimReference, Kind, LOCAL_PATH_CLASS, LOCAL_PATH_PROVISIONER, Object,
    ObjectMeta, PROVISIONED_BY, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus, Pod, ReclaimPolicy,
    STORAGE, VolumeNodeAffinity, VolumePhase, key_for,
};

use super::action::{Action, is_terminal, namespace, node_of};

/// The claims and volumes the plans read.
#[derive(Debug, Clone, Copy)]
pub struct Storage<'a> {
    /// PersistentVolumeClaims by store key.
    pub claims: &'a BTreeMap<String, PersistentVolumeClaim>,
    /// PersistentVolumes by store key.
    pub volumes: &'a BTreeMap<String, PersistentVolume>,
}

/// The names of the claims a pod mounts.
pub fn claim_names(p: &Pod) -> impl Iterator<Item = &str> {
    p.spec
        .volumes
        .iter()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// The node a pending pod's claims pin it to (`Ok(None)`: no bound claim, any node), or
/// why it cannot be placed yet (Kubernetes' wording where it has one).
pub fn pod_volume_node(p: &Pod, storage: Storage<'_>) -> Result<Option<String>, String> {
    let ns = namespace(&p.metadata);
    let mut node: Option<(&str, &str)> = None;
    for name in claim_names(p) {
        let Some(c) = storage
            .claims
            .get(&key_for(Kind::PersistentVolumeClaim, ns, name))
        else {
            return Err(format!("persistentvolumeclaim {name:?} not found"));
        };
        if c.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
        }
        let Some(vol) = c.bound_volume() else {
            if c.phase() == ClaimPhase::Lost {
                return Err(format!(
                    "persistentvolumeclaim {name:?} lost its volume {:?}",
                    c.spec.volume_name.as_deref().unwrap_or("")
                ));
            }
            if c.spec.volume_name.is_some() {
                return Err(format!(
                    "persistentvolumeclaim {name:?} waits for its volume {:?}",
                    c.spec.volume_name.as_deref().unwrap_or("")
                ));
            }
            continue;
        };
        let Some(pv_node) = storage
            .volumes
            .get(&key_for(Kind::PersistentVolume, "", vol))
            .and_then(PersistentVolume::node)
        else {
            return Err(format!(
                "persistentvolumeclaim {name:?} is bound to volume {vol:?}, which does not exist"
            ));
        };
        match node {
            Some((n, other)) if n != pv_node => {
                return Err(format!(
                    "persistentvolumeclaims {other:?} and {name:?} have volumes on different nodes ({n}, {pv_node})"
                ));
            }
            _ => node = Some((pv_node, name)),
        }
    }
    Ok(node.map(|(n, _)| n.to_string()))
}

/// The name of the volume the provisioner makes for a claim: `pvc-<claim uid>`.
pub fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    claim.metadata.uid.as_deref().map(|u| format!("pvc-{u}"))
}

/// The volume the provisioner makes for `claim` on `node`: the claim's size and modes,
/// reclaim policy `Delete`, bound to the claim.
pub fn provisioned_volume(
    claim: &PersistentVolumeClaim,
    name: &str,
    node: &str,
) -> PersistentVolume {
    let mut meta = ObjectMeta::named("", name);
    meta.annotations.insert(
        PROVISIONED_BY.to_string(),
        LOCAL_PATH_PROVISIONER.to_string(),
    );
    let mut capacity = BTreeMap::new();
    if let Some(q) = claim.spec.resources.requests.get(STORAGE) {
        capacity.insert(STORAGE.to_string(), q.clone());
    }
    PersistentVolume {
        metadata: meta,
        spec: PersistentVolumeSpec {
            capacity,
            access_modes: claim.spec.access_modes.clone(),
            persistent_volume_reclaim_policy: ReclaimPolicy::Delete,
            storage_class_name: Some(LOCAL_PATH_CLASS.to_string()),
            volume_mode: claim.spec.volume_mode,
            claim_ref: Some(claim_ref(claim)),
            node_affinity: Some(VolumeNodeAffinity::node(node)),
        },
        status: Some(PersistentVolumeStatus {
            phase: VolumePhase::Bound,
            message: String::new(),
        }),
    }
}

fn claim_ref(c: &PersistentVolumeClaim) -> ClaimReference {
    ClaimReference {
        kind: Some(Kind::PersistentVolumeClaim.as_str().to_string()),
        api_version: Some("v1".to_string()),
        namespace: namespace(&c.metadata).to_string(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
    }
}

/// `claim` bound to `pv`.
fn bound_claim(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> PersistentVolumeClaim {
    let mut c = claim.clone();
    c.spec.volume_name = Some(pv.metadata.name.clone());
    c.status = Some(PersistentVolumeClaimStatus {
        phase: ClaimPhase::Bound,
        access_modes: if pv.spec.access_modes.is_empty() {
            vec![AccessMode::ReadWriteOnce]
        } else {
            pv.spec.access_modes.clone()
        },
        capacity: pv.spec.capacity.clone(),
    });
    c
}

fn with_phase(pv: &PersistentVolume, phase: VolumePhase) -> PersistentVolume {
    let mut v = pv.clone();
    v.status = Some(PersistentVolumeStatus {
        phase,
        message: String::new(),
    });
    v
}

/// True when `pv`'s claim reference names `c` (by namespace and name, and by uid when
/// the reference has one).
fn refers_to(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    pv.spec.claim_ref.as_ref().is_some_and(|r| {
        r.namespace == namespace(&c.metadata)
            && r.name == c.metadata.name
            && (r.uid.is_none() || r.uid == c.metadata.uid)
    })
}

/// One pass of the provisioner and binder: provision and bind claims whose first pod is
/// bound to a node, bind claims that ask for an existing volume (`spec.volumeName`), mark
/// claims whose volume is gone `Lost`, and volumes whose claim is gone (and no pod mounts
/// it any more) `Released`.
pub fn plan(storage: Storage<'_>, pods: &BTreeMap<String, Pod>) -> Vec<Action> {
    // (namespace, claim name) -> the node of the first bound, running pod that mounts it.
    let mut first_node: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let mut mounted: BTreeSet<(&str, &str)> = BTreeSet::new();
    for p in pods.values().filter(|p| !is_terminal(p)) {
        let ns = namespace(&p.metadata);
        for name in claim_names(p) {
            mounted.insert((ns, name));
            if let Some(n) = node_of(p) {
                first_node.entry((ns, name)).or_insert(n);
            }
        }
    }
    let mut actions = Vec::new();
    for c in storage.claims.values() {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = namespace(&c.metadata);
        let wanted = c.spec.volume_name.as_deref().filter(|n| !n.is_empty());
        let pv = wanted.and_then(|n| storage.volumes.get(&key_for(Kind::PersistentVolume, "", n)));
        match (c.phase(), wanted, pv) {
            (ClaimPhase::Bound, Some(_), Some(pv)) => {
                if pv.phase() != VolumePhase::Bound && refers_to(pv, c) {
                    actions.push(Action::Update(Object::PersistentVolume(with_phase(
                        pv,
                        VolumePhase::Bound,
                    ))));
                }
            }
            (ClaimPhase::Bound | ClaimPhase::Lost, Some(_), None) => {
                if c.phase() == ClaimPhase::Bound {
                    let mut lost = c.clone();
                    if let Some(s) = lost.status.as_mut() {
                        s.phase = ClaimPhase::Lost;
                    }
                    actions.push(Action::Update(Object::PersistentVolumeClaim(lost)));
                }
            }
            (ClaimPhase::Lost, _, _) => {}
            (_, Some(_), Some(pv)) => {
                // Asked for an existing volume: bind when it is free (or reserved for it).
                let free = pv.phase() == VolumePhase::Available
                    && (pv.spec.claim_ref.is_none() || refers_to(pv, c));
                if free || (pv.phase() == VolumePhase::Bound && refers_to(pv, c)) {
                    let mut v = with_phase(pv, VolumePhase::Bound);
                    v.spec.claim_ref = Some(claim_ref(c));
                    if v != *pv {
                        actions.push(Action::Update(Object::PersistentVolume(v.clone())));
                    }
                    actions.push(Action::Update(Object::PersistentVolumeClaim(bound_claim(
                        c, &v,
                    ))));
                }
            }
            (_, Some(_), None) => {}
            (_, None, _) => {
                let (Some(node), Some(name)) = (
                    first_node.get(&(ns, c.metadata.name.as_str())),
                    volume_name(c),
                ) else {
                    continue;
                };
                let key = key_for(Kind::PersistentVolume, "", &name);
                let pv = match storage.volumes.get(&key) {
                    // Made by an earlier pass whose claim update did not land.
                    Some(pv) if refers_to(pv, c) => pv.clone(),
                    Some(_) => continue,
                    None => {
                        let pv = provisioned_volume(c, &name, node);
                        actions.push(Action::Create(Object::PersistentVolume(pv.clone())));
                        pv
                    }
                };
                actions.push(Action::Update(Object::PersistentVolumeClaim(bound_claim(
                    c, &pv,
                ))));
            }
        }
    }
    for pv in storage.volumes.values() {
        let Some(r) = &pv.spec.claim_ref else {
            continue;
        };
        if pv.phase() != VolumePhase::Bound {
            continue;
        }
        let claim =
            storage
                .claims
                .get(&key_for(Kind::PersistentVolumeClaim, &r.namespace, &r.name));
        let claimed = claim.is_some_and(|c| r.uid.is_none() || r.uid == c.metadata.uid);
        if !claimed && !mounted.contains(&(r.namespace.as_str(), r.name.as_str())) {
            actions.push(Action::Update(Object::PersistentVolume(with_phase(
                pv,
                VolumePhase::Released,
            ))));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, uid: &str) -> (String, PersistentVolumeClaim) {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "3"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        (format!("PersistentVolumeClaim/ns/{name}"), c)
    }

    fn pod(name: &str, claims: &[&str], node: Option<&str>) -> (String, Pod) {
        let vols: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": vols}
        }))
        .unwrap();
        p.spec.node_name = node.map(String::from);
        (format!("Pod/ns/{name}"), p)
    }

    fn apply(
        actions: &[Action],
        claims: &mut BTreeMap<String, PersistentVolumeClaim>,
        volumes: &mut BTreeMap<String, PersistentVolume>,
    ) {
        for a in actions {
            match a {
                Action::Create(Object::PersistentVolume(v))
                | Action::Update(Object::PersistentVolume(v)) => {
                    volumes.insert(a.key(), v.clone());
                }
                Action::Update(Object::PersistentVolumeClaim(c)) => {
                    claims.insert(a.key(), c.clone());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn claims_bind_on_their_first_pods_node_and_pin_later_pods() {
        let mut claims: BTreeMap<_, _> = [claim("data", "u1")].into_iter().collect();
        let mut volumes = BTreeMap::new();
        let mut pods: BTreeMap<_, _> = [pod("a", &["data"], None)].into_iter().collect();
        let st = Storage {
            claims: &claims,
            volumes: &volumes,
        };
        // Unbound: any node, and nothing to provision before the pod is scheduled.
        assert_eq!(pod_volume_node(&pods["Pod/ns/a"], st), Ok(None));
        assert!(plan(st, &pods).is_empty());

        pods.extend([pod("a", &["data"], Some("n2"))]);
        let actions = plan(st, &pods);
        assert_eq!(actions.len(), 2, "{actions:?}");
        apply(&actions, &mut claims, &mut volumes);
        let pv = &volumes["PersistentVolume//pvc-u1"];
        assert_eq!(pv.node(), Some("n2"));
        assert_eq!(pv.phase(), VolumePhase::Bound);
        assert_eq!(
            pv.spec.persistent_volume_reclaim_policy,
            ReclaimPolicy::Delete
        );
        assert_eq!(pv.spec.capacity[STORAGE].as_str(), "1Gi");
        assert_eq!(
            pv.spec.claim_ref.as_ref().unwrap().uid.as_deref(),
            Some("u1")
        );
        let c = &claims["PersistentVolumeClaim/ns/data"];
        assert_eq!(c.bound_volume(), Some("pvc-u1"));
        // The claim update is a CAS on the claim as read.
        assert!(matches!(
            actions[1].to_write(),
            shoal_store::Write::Update {
                expected_revision: Some(3),
                ..
            }
        ));
        let st = Storage {
            claims: &claims,
            volumes: &volumes,
        };
        // Converged; a new pod of the claim may only go to n2.
        assert!(plan(st, &pods).is_empty());
        let (_, b) = pod("b", &["data"], None);
        assert_eq!(pod_volume_node(&b, st), Ok(Some("n2".to_string())));
        let (_, lost) = pod("x", &["nope"], None);
        assert_eq!(
            pod_volume_node(&lost, st),
            Err("persistentvolumeclaim \"nope\" not found".to_string())
        );
    }

    #[test]
    fn a_half_done_binding_is_finished_without_a_second_volume() {
        let (k, c) = claim("data", "u1");
        let pv = provisioned_volume(&c, "pvc-u1", "n1");
        let claims = BTreeMap::from([(k, c)]);
        let volumes = BTreeMap::from([("PersistentVolume//pvc-u1".to_string(), pv)]);
        let pods: BTreeMap<_, _> = [pod("a", &["data"], Some("n1"))].into_iter().collect();
        let actions = plan(
            Storage {
                claims: &claims,
                volumes: &volumes,
            },
            &pods,
        );
        assert_eq!(actions.len(), 1, "{actions:?}");
        let Action::Update(Object::PersistentVolumeClaim(c)) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(c.bound_volume(), Some("pvc-u1"));
    }

    #[test]
    fn deleted_claims_release_their_volume_once_unmounted_and_lost_volumes_are_told() {
        let (k, c) = claim("data", "u1");
        let pv = provisioned_volume(&c, "pvc-u1", "n1");
        let bound = bound_claim(&c, &pv);
        let volumes = BTreeMap::from([("PersistentVolume//pvc-u1".to_string(), pv.clone())]);
        let none = BTreeMap::new();
        let no_volumes = BTreeMap::new();
        let mut pods: BTreeMap<_, _> = [pod("a", &["data"], Some("n1"))].into_iter().collect();
        let st = Storage {
            claims: &none,
            volumes: &volumes,
        };
        // Still mounted by a pod: stays Bound.
        assert!(plan(st, &pods).is_empty());
        pods.clear();
        let actions = plan(st, &pods);
        let [Action::Update(Object::PersistentVolume(v))] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(v.phase(), VolumePhase::Released);
        // A claim of the same name but another uid does not keep it.
        let (_, mut other) = claim("data", "u2");
        other.spec.volume_name = None;
        let claims = BTreeMap::from([(k.clone(), other)]);
        let st = Storage {
            claims: &claims,
            volumes: &volumes,
        };
        let released = plan(st, &pods)
            .iter()
            .filter(|a| matches!(a, Action::Update(Object::PersistentVolume(v)) if v.phase() == VolumePhase::Released))
            .count();
        assert_eq!(released, 1);
        // The volume is deleted under a bound claim: Lost, and its pods are told.
        let claims = BTreeMap::from([(k, bound)]);
        let st = Storage {
            claims: &claims,
            volumes: &no_volumes,
        };
        let actions = plan(st, &pods);
        let [Action::Update(Object::PersistentVolumeClaim(c))] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(c.phase(), ClaimPhase::Lost);
        let (_, p) = pod("b", &["data"], None);
        assert_eq!(
            pod_volume_node(&p, st),
            Err("persistentvolumeclaim \"data\" is bound to volume \"pvc-u1\", which does not exist".to_string())
        );
    }

    #[test]
    fn claims_naming_a_volume_bind_to_it_when_free() {
        let (k, mut c) = claim("data", "u1");
        c.spec.volume_name = Some("manual".into());
        let mut pv = provisioned_volume(&c, "manual", "n3");
        pv.spec.claim_ref = None;
        pv.status = None;
        pv.spec.persistent_volume_reclaim_policy = ReclaimPolicy::Retain;
        let mut claims = BTreeMap::from([(k, c)]);
        let mut volumes = BTreeMap::from([("PersistentVolume//manual".to_string(), pv)]);
        let pods = BTreeMap::new();
        let actions = plan(
            Storage {
                claims: &claims,
                volumes: &volumes,
            },
            &pods,
        );
        assert_eq!(actions.len(), 2, "{actions:?}");
        apply(&actions, &mut claims, &mut volumes);
        let st = Storage {
            claims: &claims,
            volumes: &volumes,
        };
        assert!(plan(st, &pods).is_empty());
        let (_, p) = pod("b", &["data"], None);
        assert_eq!(pod_volume_node(&p, st), Ok(Some("n3".to_string())));
        assert_eq!(
            volumes["PersistentVolume//manual"]
                .spec
                .claim_ref
                .as_ref()
                .unwrap()
                .name,
            "data"
        );
    }
}
