//! Who may do what (docs/security.md "Roles"): the per-method policy of the
//! authorization layer ([`controller_policy`]), the per-request rules of the Cluster API
//! ([`check_verb`], [`check_write`]) including the node authorizer, and the admission
//! rules for pods ([`admission`]). Pure functions of the identity and the objects; the
//! handlers call them before touching the store.

use std::sync::Arc;

use serde_json::Value;
use shoal_api::{Kind, Object};
use shoal_pki::layer::Policy;
use shoal_pki::{Identity, Role};
use tonic::Status;

/// A Cluster API verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// get
    Get,
    /// list
    List,
    /// watch
    Watch,
    /// create
    Create,
    /// update (and apply of an existing object)
    Update,
    /// delete
    Delete,
}

impl Verb {
    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

pub(crate) fn denied(who: &Identity, what: String) -> Status {
    Status::permission_denied(format!("{who} may not {what}"))
}

/// The method-level policy of a controller's gRPC server.
pub fn controller_policy() -> Policy {
    Arc::new(|path: &str, who: Option<&Identity>| {
        let Some(who) = who else {
            // Health checks (load balancers, orchestrators) come without a certificate.
            return if path == "/shoal.v1.Access/Join" || path.starts_with("/grpc.health.v1.Health/")
            {
                Ok(())
            } else {
                Err(Status::unauthenticated(format!(
                    "{path}: a client certificate signed by this cluster's CA is required (use SHOAL_CONFIG / --config; agents and controllers join with a token)"
                )))
            };
        };
        let method = path.rsplit('/').next().unwrap_or("");
        let admin_only = matches!(
            path,
            "/shoal.v1.Cluster/AddMember"
                | "/shoal.v1.Cluster/RemoveMember"
                | "/shoal.v1.Cluster/Snapshot"
                | "/shoal.v1.Access/CreateToken"
                | "/shoal.v1.Access/ListTokens"
                | "/shoal.v1.Access/RevokeToken"
                | "/shoal.v1.Access/IssueUser"
        );
        if path.starts_with("/shoal.v1.Raft/") || path == "/shoal.v1.Images/PutBlob" {
            return if who.is_controller() {
                Ok(())
            } else {
                Err(denied(who, format!("call {path} (controllers only)")))
            };
        }
        if admin_only && !who.is_admin() {
            return Err(denied(who, format!("call {method} (admin only)")));
        }
        match (path, who) {
            (p, Identity::Node { .. }) if p.starts_with("/shoal.v1.Proxy/") => {
                Err(denied(who, "use the logs/exec proxy".into()))
            }
            (
                "/shoal.v1.Images/Import" | "/shoal.v1.Images/Remove" | "/shoal.v1.Images/Tag",
                Identity::Node { .. },
            )
            | (
                "/shoal.v1.Images/Import"
                | "/shoal.v1.Images/Remove"
                | "/shoal.v1.Images/Tag"
                | "/shoal.v1.Proxy/Build"
                | "/shoal.v1.Proxy/Commit",
                Identity::User {
                    role: Role::View, ..
                }
                | Identity::User {
                    namespace: Some(_), ..
                },
            ) => Err(denied(
                who,
                format!("{method} images (admin, or edit in every namespace)"),
            )),
            _ => Ok(()),
        }
    })
}

/// May `who` use `verb` on `kind` in `namespace` ("" = every namespace, for list and
/// watch)? Object-level rules for writes are in [`check_write`].
pub fn check_verb(who: &Identity, verb: Verb, kind: Kind, namespace: &str) -> Result<(), Status> {
    let what = || {
        if kind.namespaced() && !namespace.is_empty() {
            format!(
                "{} {} in namespace {namespace}",
                verb.as_str(),
                kind.plural()
            )
        } else if kind.namespaced() {
            format!("{} {} in every namespace", verb.as_str(), kind.plural())
        } else {
            format!("{} {}", verb.as_str(), kind.plural())
        }
    };
    match who {
        Identity::Controller { .. } => Ok(()),
        Identity::User {
            role: Role::Admin, ..
        } => Ok(()),
        Identity::User {
            role,
            namespace: scope,
            ..
        } => {
            if let Some(scope) = scope
                && kind.namespaced()
                && namespace != scope
            {
                return Err(denied(who, what()));
            }
            if verb.reads() {
                if *role == Role::View && kind == Kind::Secret {
                    return Err(denied(
                        who,
                        format!("{} (the view role cannot read Secrets)", what()),
                    ));
                }
                return Ok(());
            }
            if *role == Role::View || !kind.namespaced() || kind == Kind::Namespace {
                return Err(denied(who, what()));
            }
            Ok(())
        }
        Identity::Node { .. } => {
            if matches!(kind, Kind::Secret | Kind::ConfigMap) {
                // Object by object, for the pods bound to it: see [`node_reads_config`] (the
                // API checks the object's name and the pods on each get, list and watch).
                return if verb.reads() {
                    Ok(())
                } else {
                    Err(denied(
                        who,
                        format!(
                            "{} (a node reads the Secrets and ConfigMaps of the pods bound to it, one by one)",
                            what()
                        ),
                    ))
                };
            }
            if verb.reads() {
                return Ok(());
            }
            match (kind, verb) {
                (Kind::Node | Kind::Pod, Verb::Update) => Ok(()),
                (Kind::Node, Verb::Create) => Ok(()),
                (Kind::Event, Verb::Create | Verb::Update) => Ok(()),
                // Its own Released volumes, object by object: see [`node_deletes_volume`].
                (Kind::PersistentVolume, Verb::Delete) => Ok(()),
                _ => Err(denied(who, what())),
            }
        }
    }
}

fn spec_of(v: Option<&Value>) -> Option<&Value> {
    v.and_then(|v| v.get("spec"))
}

fn str_at<'a>(v: Option<&'a Value>, p: &str) -> &'a str {
    v.and_then(|v| v.pointer(p))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// May `who` send heartbeats for node `name`? Its own agent, controllers and admins.
pub fn check_heartbeat(who: &Identity, name: &str) -> Result<(), Status> {
    match who {
        Identity::Node { name: me } if me == name => Ok(()),
        _ if who.is_controller() || who.is_admin() => Ok(()),
        _ => Err(denied(who, format!("send heartbeats for node {name}"))),
    }
}

/// Object-level rules of a write (`new` as sent, `old` as stored, `None` when absent):
/// the node authorizer, and what binds a Node's network identity to its node.
pub fn check_write(
    who: &Identity,
    kind: Kind,
    name: &str,
    new: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), Status> {
    if kind == Kind::Node && !who.is_controller() {
        // podCIDR is assigned by the controllers: never set or changed through the API.
        let want = str_at(new, "/spec/podCIDR");
        let have = str_at(old, "/spec/podCIDR");
        if !want.is_empty() && want != have {
            return Err(denied(
                who,
                format!("set spec.podCIDR of node {name} (the controllers assign it)"),
            ));
        }
        // The network identity (addresses, WireGuard key, agent endpoint) is the node's own
        // (admins excepted: they can make a join token and join any node anyway).
        let mine = matches!(who, Identity::Node { name: n } if n == name) || who.is_admin();
        if !mine && new.is_some() {
            let status_new = new.and_then(|v| v.get("status"));
            let status_old = old.and_then(|v| v.get("status"));
            if status_new.is_some() && status_new != status_old {
                return Err(denied(
                    who,
                    format!(
                        "change the status (addresses, WireGuard key) of node {name}; only its agent does"
                    ),
                ));
            }
        }
    }
    if matches!(kind, Kind::ConfigMap | Kind::Secret)
        && let (Some(new), Some(old)) = (new, old)
        && let Some(why) = shoal_api::configmap::immutable_violation(old, new)
    {
        return Err(Status::invalid_argument(format!(
            "{} {name}: {why}",
            kind.as_str()
        )));
    }
    let Identity::Node { name: me } = who else {
        return Ok(());
    };
    match kind {
        Kind::Node if name == me => Ok(()),
        Kind::Node => Err(denied(who, format!("write node {name}"))),
        Kind::Pod => {
            let bound = str_at(old, "/spec/nodeName");
            if bound != me {
                return Err(denied(
                    who,
                    format!(
                        "update pod {name}, which is bound to {}",
                        if bound.is_empty() { "no node" } else { bound }
                    ),
                ));
            }
            let same_meta =
                |p: &str| new.and_then(|v| v.pointer(p)) == old.and_then(|v| v.pointer(p));
            if spec_of(new) != spec_of(old)
                || !same_meta("/metadata/labels")
                || !same_meta("/metadata/annotations")
            {
                return Err(denied(
                    who,
                    format!("change the spec or metadata of pod {name} (its status only)"),
                ));
            }
            Ok(())
        }
        Kind::Event => Ok(()),
        _ => Err(denied(who, format!("write {}", kind.plural()))),
    }
}

/// The node authorizer for volume deletion: a node deletes only a PersistentVolume on
/// itself that is `Released` with reclaim policy `Delete` (its agent has removed the
/// directory). `stored` is the volume as stored (`None`: absent, nothing to check).
pub fn node_deletes_volume(
    who: &Identity,
    name: &str,
    stored: Option<&Value>,
) -> Result<(), Status> {
    let Identity::Node { name: me } = who else {
        return Ok(());
    };
    let Some(v) = stored else {
        return Ok(());
    };
    let pv = match Object::from_json(v) {
        Ok(Object::PersistentVolume(pv)) => pv,
        _ => return Err(denied(who, format!("delete persistentvolume {name}"))),
    };
    if pv.node() == Some(me.as_str())
        && pv.phase() == shoal_api::VolumePhase::Released
        && pv.spec.persistent_volume_reclaim_policy == shoal_api::ReclaimPolicy::Delete
    {
        Ok(())
    } else {
        Err(denied(
            who,
            format!(
                "delete persistentvolume {name} (a node deletes only its own Released volumes with reclaim policy Delete)"
            ),
        ))
    }
}

/// The node authorizer for Secrets and ConfigMaps: node `me` may get `kind` `name` only
/// when a pod bound to it (in `pods`, those of the object's namespace) refers to it in
/// `env`, `envFrom`, a volume or (Secrets) `imagePullSecrets`.
pub fn node_reads_config(
    who: &Identity,
    kind: Kind,
    name: &str,
    pods: &[shoal_api::Pod],
) -> Result<(), Status> {
    let Identity::Node { name: me } = who else {
        return Ok(());
    };
    let used = pods.iter().any(|p| {
        p.spec.node_name.as_deref() == Some(me.as_str()) && {
            let refs = shoal_api::podconfig::ConfigRefs::of(&p.spec);
            match kind {
                Kind::Secret => refs.secrets.contains(name) || refs.pull_secrets.contains(name),
                Kind::ConfigMap => refs.config_maps.contains(name),
                _ => true,
            }
        }
    });
    if used {
        Ok(())
    } else {
        Err(denied(
            who,
            format!(
                "get {} {name}: no pod bound to {me} refers to it",
                kind.as_str().to_lowercase()
            ),
        ))
    }
}

/// Cluster settings admission needs.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    /// `--allow-host-path PREFIX`: hostPath volumes under these are allowed to non-admins.
    pub host_path_prefixes: Vec<String>,
    /// Host ports pods may never take (Shoal's own and ssh).
    pub reserved_host_ports: Vec<(u16, &'static str)>,
}

impl AdmissionConfig {
    /// The reserved ports: ssh, DNS, the controllers' and agents' gRPC ports, WireGuard.
    pub fn new(controller_port: u16, host_path_prefixes: Vec<String>) -> AdmissionConfig {
        let mut ports = vec![
            (22, "ssh"),
            (53, "node DNS"),
            (controller_port, "the controller API"),
            (7000, "the controller API (default)"),
            (7100, "the agent API (default)"),
            (7050, "the built-in registry (default)"),
            (7080, "the controller metrics listener (default)"),
            (7180, "the agent metrics listener (default)"),
            (51820, "WireGuard (the agents' default --wireguard-port)"),
        ];
        ports.sort();
        ports.dedup_by_key(|p| p.0);
        AdmissionConfig {
            host_path_prefixes,
            reserved_host_ports: ports,
        }
    }
}

impl AdmissionConfig {
    /// Also reserves the port this controller's metrics listener (`--metrics-listen`) uses.
    pub fn with_metrics_port(mut self, port: u16) -> AdmissionConfig {
        if !self.reserved_host_ports.iter().any(|p| p.0 == port) {
            self.reserved_host_ports
                .push((port, "the controller metrics listener"));
            self.reserved_host_ports.sort();
        }
        self
    }

    /// Also reserves the port this controller's built-in registry listens on.
    pub fn with_registry_port(mut self, port: u16) -> AdmissionConfig {
        if !self.reserved_host_ports.iter().any(|p| p.0 == port) {
            self.reserved_host_ports
                .push((port, "the built-in registry"));
            self.reserved_host_ports.sort();
        }
        self
    }
}

fn under(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    !p.is_empty()
        && (path == p || path.starts_with(&format!("{p}/")))
        && !path.split('/').any(|c| c == "..")
}

/// Admission rules for the pods an object makes (a Pod, the template of a Deployment,
/// DaemonSet, Job or CronJob):
/// hostPath only for admins (or under an allowed prefix), no host port that Shoal or
/// ssh uses. Errors name the field.
pub fn admission(who: &Identity, o: &Object, cfg: &AdmissionConfig) -> Result<(), Status> {
    let (spec, at) = match o {
        Object::Pod(p) => (&p.spec, "spec"),
        Object::Deployment(d) => (&d.spec.template.spec, "spec.template.spec"),
        Object::DaemonSet(d) => (&d.spec.template.spec, "spec.template.spec"),
        Object::StatefulSet(s) => (&s.spec.template.spec, "spec.template.spec"),
        Object::Job(j) => (&j.spec.template.spec, "spec.template.spec"),
        Object::CronJob(c) => (
            &c.spec.job_template.spec.template.spec,
            "spec.jobTemplate.spec.template.spec",
        ),
        _ => return Ok(()),
    };
    let what = format!("{} {}", o.kind(), o.name());
    // Unconfined seccomp and added capabilities weaken the host's protection: admins only.
    if !who.is_admin()
        && let Some(field) = spec
            .privileged_settings(at)
            .into_iter()
            .find(|f| !f.ends_with("hostPath"))
    {
        return Err(denied(
            who,
            format!("set {field} ({what}); only admins may weaken a container's confinement"),
        ));
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if let Some(h) = &v.host_path
            && !who.is_admin()
            && !cfg.host_path_prefixes.iter().any(|p| under(&h.path, p))
        {
            return Err(denied(
                who,
                format!(
                    "use a hostPath volume ({what}: {at}.volumes[{i}].hostPath.path {:?}); only admins may, or paths under --allow-host-path",
                    h.path
                ),
            ));
        }
    }
    for (ci, c) in spec.containers.iter().enumerate() {
        // Init containers have no ports (validation).
        for (pi, p) in c.ports.iter().enumerate() {
            if let Some(hp) = p.host_port
                && let Some((_, owner)) = cfg
                    .reserved_host_ports
                    .iter()
                    .find(|(port, _)| i32::from(*port) == hp)
            {
                return Err(Status::invalid_argument(format!(
                    "{what}: {at}.containers[{ci}].ports[{pi}].hostPort {hp} is reserved for {owner}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(role: Role, ns: Option<&str>) -> Identity {
        Identity::User {
            name: "u".into(),
            role,
            namespace: ns.map(str::to_string),
        }
    }

    #[test]
    fn roles() {
        let view = user(Role::View, None);
        assert!(check_verb(&view, Verb::Get, Kind::Pod, "a").is_ok());
        assert!(check_verb(&view, Verb::Create, Kind::Pod, "a").is_err());
        let team = user(Role::Edit, Some("team"));
        assert!(check_verb(&team, Verb::Create, Kind::Pod, "team").is_ok());
        assert!(check_verb(&team, Verb::Create, Kind::Pod, "other").is_err());
        assert!(check_verb(&team, Verb::List, Kind::Pod, "").is_err());
        assert!(check_verb(&team, Verb::Get, Kind::Node, "").is_ok());
        assert!(check_verb(&team, Verb::Update, Kind::Node, "").is_err());
        let e = check_verb(&team, Verb::Delete, Kind::Pod, "x").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("namespace x"), "{}", e.message());
        assert!(check_verb(&user(Role::Admin, None), Verb::Delete, Kind::Node, "").is_ok());
    }

    #[test]
    fn a_node_beats_only_for_itself() {
        let n1 = Identity::Node { name: "n1".into() };
        assert!(check_heartbeat(&n1, "n1").is_ok());
        let e = check_heartbeat(&n1, "n2").expect_err("another node");
        assert!(e.message().contains("heartbeats for node n2"), "{e:?}");
        assert!(check_heartbeat(&user(Role::Admin, None), "n2").is_ok());
        assert!(check_heartbeat(&user(Role::Edit, None), "n2").is_err());
    }

    #[test]
    fn node_authorizer() {
        let n1 = Identity::Node { name: "n1".into() };
        assert!(check_verb(&n1, Verb::Create, Kind::Pod, "default").is_err());
        assert!(check_verb(&n1, Verb::Delete, Kind::Pod, "default").is_err());
        assert!(check_verb(&n1, Verb::Create, Kind::Deployment, "default").is_err());
        let node = |name: &str, cidr: Option<&str>| json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}, "status": {"addresses": []}});
        assert!(check_write(&n1, Kind::Node, "n1", Some(&node("n1", None)), None).is_ok());
        assert!(check_write(&n1, Kind::Node, "n2", Some(&node("n2", None)), None).is_err());
        let e = check_write(
            &n1,
            Kind::Node,
            "n1",
            Some(&node("n1", Some("10.0.9.0/24"))),
            Some(&node("n1", Some("10.0.1.0/24"))),
        )
        .unwrap_err();
        assert!(e.message().contains("podCIDR"), "{}", e.message());
        assert!(
            check_write(
                &n1,
                Kind::Node,
                "n1",
                Some(&node("n1", Some("10.0.1.0/24"))),
                Some(&node("n1", Some("10.0.1.0/24")))
            )
            .is_ok()
        );
        let pod = |node: &str, phase: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node}, "status": {"phase": phase}});
        assert!(
            check_write(
                &n1,
                Kind::Pod,
                "p",
                Some(&pod("n1", "Running")),
                Some(&pod("n1", "Pending"))
            )
            .is_ok()
        );
        assert!(
            check_write(
                &n1,
                Kind::Pod,
                "p",
                Some(&pod("n2", "Running")),
                Some(&pod("n2", "Pending"))
            )
            .is_err()
        );
        assert!(
            check_write(
                &n1,
                Kind::Pod,
                "p",
                Some(&pod("n2", "Running")),
                Some(&pod("n1", "Pending"))
            )
            .is_err()
        );
    }

    #[test]
    fn only_a_node_sets_its_network_identity() {
        let admin = user(Role::Admin, None);
        let n2 = Identity::Node { name: "n2".into() };
        let old = json!({"spec": {}, "status": {"wireguard": {"publicKey": "A"}}});
        let forged = json!({"spec": {}, "status": {"wireguard": {"publicKey": "EVIL"}}});
        assert!(check_write(&n2, Kind::Node, "n1", Some(&forged), Some(&old)).is_err());
        let cordon =
            json!({"spec": {"unschedulable": true}, "status": {"wireguard": {"publicKey": "A"}}});
        assert!(check_write(&admin, Kind::Node, "n1", Some(&cordon), Some(&old)).is_ok());
        let fake = json!({"spec": {"podCIDR": "10.0.0.0/24"}});
        assert!(check_write(&admin, Kind::Node, "fake", Some(&fake), None).is_err());
    }

    #[test]
    fn secrets_are_hidden_from_view_and_from_other_nodes() {
        let view = user(Role::View, None);
        for verb in [Verb::Get, Verb::List, Verb::Watch] {
            let e = check_verb(&view, verb, Kind::Secret, "a").unwrap_err();
            assert!(
                e.message().contains("the view role cannot read Secrets"),
                "{}",
                e.message()
            );
        }
        assert!(check_verb(&view, Verb::Get, Kind::ConfigMap, "a").is_ok());
        assert!(check_verb(&user(Role::Edit, None), Verb::Get, Kind::Secret, "a").is_ok());
        assert!(check_verb(&user(Role::Edit, None), Verb::Create, Kind::Secret, "a").is_ok());

        let n1 = Identity::Node { name: "n1".into() };
        assert!(check_verb(&n1, Verb::Get, Kind::Secret, "a").is_ok());
        // Lists and watches pass the verb check; the API narrows them to one named object.
        assert!(check_verb(&n1, Verb::List, Kind::Secret, "a").is_ok());
        assert!(check_verb(&n1, Verb::Watch, Kind::ConfigMap, "").is_ok());
        assert!(check_verb(&n1, Verb::Create, Kind::Secret, "a").is_err());
        let pod = |node: &str| -> shoal_api::Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "a"},
                "spec": {"nodeName": node, "imagePullSecrets": [{"name": "regcred"}],
                    "containers": [{"name": "c", "image": "i",
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                    "envFrom": [{"configMapRef": {"name": "app"}}]}],
                    "volumes": [{"name": "v", "secret": {"secretName": "tls"}}]}
            }))
            .unwrap()
        };
        let pods = [pod("n1"), pod("n2")];
        assert!(node_reads_config(&n1, Kind::Secret, "db", &pods).is_ok());
        assert!(node_reads_config(&n1, Kind::Secret, "tls", &pods).is_ok());
        assert!(node_reads_config(&n1, Kind::ConfigMap, "app", &pods).is_ok());
        assert!(node_reads_config(&n1, Kind::Secret, "regcred", &pods).is_ok());
        // A pull secret is a Secret only: no ConfigMap of that name.
        assert!(node_reads_config(&n1, Kind::ConfigMap, "regcred", &pods).is_err());
        let e = node_reads_config(&n1, Kind::Secret, "app", &pods).unwrap_err();
        assert!(
            e.message().contains("no pod bound to n1"),
            "{}",
            e.message()
        );
        let n3 = Identity::Node { name: "n3".into() };
        assert!(node_reads_config(&n3, Kind::Secret, "db", &pods).is_err());
        assert!(node_reads_config(&n3, Kind::Secret, "regcred", &pods).is_err());
    }

    #[test]
    fn nodes_delete_only_their_own_released_volumes() {
        let n1 = Identity::Node { name: "n1".into() };
        assert!(check_verb(&n1, Verb::Delete, Kind::PersistentVolume, "").is_ok());
        assert!(check_verb(&n1, Verb::Create, Kind::PersistentVolume, "").is_err());
        assert!(check_verb(&n1, Verb::Delete, Kind::PersistentVolumeClaim, "a").is_err());
        let pv = |node: &str, phase: &str, policy: &str| {
            json!({"apiVersion": "shoal/v1", "kind": "PersistentVolume",
                   "metadata": {"name": "pv1"},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": policy,
                            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
                   "status": {"phase": phase}})
        };
        assert!(node_deletes_volume(&n1, "pv1", Some(&pv("n1", "Released", "Delete"))).is_ok());
        for bad in [
            pv("n2", "Released", "Delete"),
            pv("n1", "Bound", "Delete"),
            pv("n1", "Released", "Retain"),
        ] {
            let e = node_deletes_volume(&n1, "pv1", Some(&bad)).unwrap_err();
            assert!(e.message().contains("its own Released volumes"), "{e:?}");
        }
        let admin = user(Role::Admin, None);
        assert!(node_deletes_volume(&admin, "pv1", Some(&pv("n2", "Bound", "Retain"))).is_ok());
    }

    #[test]
    fn immutable_data_cannot_change() {
        let admin = user(Role::Admin, None);
        let old = json!({"data": {"a": "1"}, "immutable": true});
        let e = check_write(
            &admin,
            Kind::ConfigMap,
            "c",
            Some(&json!({"data": {"a": "2"}, "immutable": true})),
            Some(&old),
        )
        .unwrap_err();
        assert!(e.message().contains("immutable"), "{}", e.message());
    }

    #[test]
    fn host_paths_are_under_prefixes_only() {
        assert!(under("/srv/data/x", "/srv/data"));
        assert!(under("/srv/data", "/srv/data/"));
        assert!(!under("/srv/database", "/srv/data"));
        assert!(!under("/srv/data/../../etc", "/srv/data"));
        assert!(!under("/etc", ""));
    }

    #[test]
    fn jobs_and_cronjobs_are_namespaced_writes_with_pod_admission() {
        let team = user(Role::Edit, Some("team"));
        for k in [Kind::Job, Kind::CronJob] {
            assert!(check_verb(&team, Verb::Create, k, "team").is_ok(), "{k}");
            assert!(check_verb(&team, Verb::Delete, k, "other").is_err(), "{k}");
            assert!(
                check_verb(&user(Role::View, None), Verb::Create, k, "team").is_err(),
                "{k}"
            );
        }
        let pod = json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}],
                         "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]});
        let job = Object::from_json(&json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "namespace": "team"},
            "spec": {"template": {"spec": pod}}}))
        .unwrap();
        let cj = Object::from_json(&json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "c", "namespace": "team"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": pod}}}}}))
        .unwrap();
        let cfg = AdmissionConfig::default();
        let e = admission(&team, &job, &cfg).unwrap_err();
        assert!(
            e.message().contains("spec.template.spec.volumes[0]"),
            "{e:?}"
        );
        let e = admission(&team, &cj, &cfg).unwrap_err();
        assert!(
            e.message()
                .contains("spec.jobTemplate.spec.template.spec.volumes[0]"),
            "{e:?}"
        );
        assert!(admission(&user(Role::Admin, None), &job, &cfg).is_ok());
    }

    #[test]
    fn daemonsets_are_namespaced_writes_with_pod_admission() {
        let team = user(Role::Edit, Some("team"));
        assert!(check_verb(&team, Verb::Create, Kind::DaemonSet, "team").is_ok());
        assert!(check_verb(&team, Verb::Delete, Kind::DaemonSet, "other").is_err());
        let ds = Object::from_json(&json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "team"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "b"}],
                                           "volumes": [{"name": "h", "hostPath": {"path": "/var/log"}}]}}}}))
        .unwrap();
        let cfg = AdmissionConfig::default();
        let e = admission(&team, &ds, &cfg).unwrap_err();
        assert!(
            e.message()
                .contains("DaemonSet d: spec.template.spec.volumes[0]"),
            "{e:?}"
        );
        assert!(admission(&user(Role::Admin, None), &ds, &cfg).is_ok());
    }

    #[test]
    fn tagging_images_needs_what_importing_needs() {
        let policy = controller_policy();
        for method in ["Import", "Tag", "Remove"] {
            let path = format!("/shoal.v1.Images/{method}");
            assert!(policy(&path, Some(&user(Role::Admin, None))).is_ok());
            assert!(policy(&path, Some(&user(Role::Edit, None))).is_ok());
            for who in [
                user(Role::View, None),
                user(Role::Edit, Some("team-a")),
                Identity::Node { name: "n1".into() },
            ] {
                let e = policy(&path, Some(&who)).unwrap_err();
                assert_eq!(e.code(), tonic::Code::PermissionDenied, "{method} {who}");
                assert!(e.message().contains("edit in every namespace"), "{e:?}");
            }
        }
        assert!(policy("/shoal.v1.Images/Resolve", Some(&user(Role::View, None))).is_ok());
    }

    #[test]
    fn builds_and_commits_need_what_importing_needs() {
        let policy = controller_policy();
        for path in ["/shoal.v1.Proxy/Build", "/shoal.v1.Proxy/Commit"] {
            assert!(policy(path, Some(&user(Role::Admin, None))).is_ok());
            assert!(policy(path, Some(&user(Role::Edit, None))).is_ok());
            for who in [
                user(Role::View, None),
                user(Role::Edit, Some("team-a")),
                Identity::Node { name: "n1".into() },
            ] {
                let e = policy(path, Some(&who)).unwrap_err();
                assert_eq!(e.code(), tonic::Code::PermissionDenied, "{path} {who}");
            }
        }
    }
}
