//! The kinds of objects Shoal stores.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The API version Shoal writes on every object.
pub const API_VERSION: &str = "shoal/v1";

/// A kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A group of containers sharing a network namespace, bound to one node.
    Pod,
    /// A replicated, rolling-updated set of pods made from a template.
    Deployment,
    /// One pod from a template on every matching node (`apps/v1`).
    DaemonSet,
    /// Pods with stable names, DNS names and volumes (`apps/v1`).
    StatefulSet,
    /// A stable virtual IP and DNS name load-balanced to selected pods.
    Service,
    /// A machine running the agent (cluster-scoped).
    Node,
    /// A record of something that happened to an object.
    Event,
    /// A namespace for other objects (cluster-scoped).
    Namespace,
    /// The ready addresses behind a Service (written by the controller).
    Endpoints,
    /// Pods run to completion (`batch/v1`).
    Job,
    /// Jobs made on a cron schedule (`batch/v1`).
    CronJob,
    /// Key/value configuration for pods.
    ConfigMap,
    /// Sensitive key/value data for pods (encrypted at rest).
    Secret,
    /// A request for storage that pods mount.
    PersistentVolumeClaim,
    /// A directory on one node bound to a claim (cluster-scoped).
    PersistentVolume,
    /// Which pods may connect to which (`networking.k8s.io/v1`).
    NetworkPolicy,
}

/// The name given to [`Kind::from_str`] is not a kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown kind {0:?}: expected one of pod (po), deployment (deploy), daemonset (ds), statefulset (sts), service (svc), node (no), event (ev), namespace (ns), endpoints (ep), job, cronjob (cj), configmap (cm), secret, persistentvolumeclaim (pvc), persistentvolume (pv), networkpolicy (netpol)"
)]
pub struct UnknownKind(pub String);

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 16] = [
        Kind::Pod,
        Kind::Deployment,
        Kind::DaemonSet,
        Kind::StatefulSet,
        Kind::Service,
        Kind::Node,
        Kind::Event,
        Kind::Namespace,
        Kind::Endpoints,
        Kind::Job,
        Kind::CronJob,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::PersistentVolumeClaim,
        Kind::PersistentVolume,
        Kind::NetworkPolicy,
    ];

    /// The name as written in manifests: `Pod`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::Service => "Service",
            Kind::Node => "Node",
            Kind::Event => "Event",
            Kind::Namespace => "Namespace",
            Kind::Endpoints => "Endpoints",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// True for kinds that live in a namespace (all but Node, Namespace and
    /// PersistentVolume).
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::Namespace | Kind::PersistentVolume)
    }

    /// The lower-case plural: `pods`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::DaemonSet => "daemonsets",
            Kind::StatefulSet => "statefulsets",
            Kind::Service => "services",
            Kind::Node => "nodes",
            Kind::Event => "events",
            Kind::Namespace => "namespaces",
            Kind::Endpoints => "endpoints",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
            Kind::PersistentVolume => "persistentvolumes",
            Kind::NetworkPolicy => "networkpolicies",
        }
    }

    /// kubectl's short name (`po`, `deploy`, `svc`, …), if the kind has one.
    pub fn short_name(self) -> Option<&'static str> {
        Some(match self {
            Kind::Pod => "po",
            Kind::Deployment => "deploy",
            Kind::DaemonSet => "ds",
            Kind::StatefulSet => "sts",
            Kind::PersistentVolumeClaim => "pvc",
            Kind::PersistentVolume => "pv",
            Kind::Service => "svc",
            Kind::Node => "no",
            Kind::Event => "ev",
            Kind::Namespace => "ns",
            Kind::Endpoints => "ep",
            Kind::CronJob => "cj",
            Kind::ConfigMap => "cm",
            Kind::NetworkPolicy => "netpol",
            Kind::Job | Kind::Secret => return None,
        })
    }

    /// The API version Shoal writes: `shoal/v1`.
    pub fn api_version(self) -> &'static str {
        API_VERSION
    }

    /// The Kubernetes API version of the same kind: `v1`, `apps/v1` for Deployment,
    /// DaemonSet and StatefulSet, `batch/v1` for Job and CronJob, `networking.k8s.io/v1` for
    /// NetworkPolicy.
    pub fn kubernetes_api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet => "apps/v1",
            Kind::Job | Kind::CronJob => "batch/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    /// True when manifests may use `api_version` for this kind (`shoal/v1` or Kubernetes').
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        api_version == API_VERSION || api_version == self.kubernetes_api_version()
    }

    /// The kind written exactly as in manifests (`Pod`), if it is one.
    pub fn from_manifest_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts kubectl's names and aliases, case-insensitively: `pod`, `pods`, `po`,
    /// `deployment`, `deployments`, `deploy`, `daemonset`, `daemonsets`, `ds`, `statefulset`, `statefulsets`, `sts`, `service`, `services`, `svc`, `node`, `nodes`,
    /// `no`, `event`, `events`, `ev`, `namespace`, `namespaces`, `ns`, `endpoints`, `ep`,
    /// `job`, `jobs`, `cronjob`, `cronjobs`, `cj`, `configmap`, `configmaps`, `cm`, `secret`, `secrets`,
    /// `persistentvolumeclaim`, `persistentvolumeclaims`, `pvc`, `persistentvolume`,
    /// `persistentvolumes`, `pv`, `networkpolicy`, `networkpolicies`, `netpol`.
    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Kind::Pod,
            "deployment" | "deployments" | "deploy" => Kind::Deployment,
            "daemonset" | "daemonsets" | "ds" => Kind::DaemonSet,
            "statefulset" | "statefulsets" | "sts" => Kind::StatefulSet,
            "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" => {
                Kind::PersistentVolumeClaim
            }
            "persistentvolume" | "persistentvolumes" | "pv" => Kind::PersistentVolume,
            "service" | "services" | "svc" => Kind::Service,
            "node" | "nodes" | "no" => Kind::Node,
            "event" | "events" | "ev" => Kind::Event,
            "namespace" | "namespaces" | "ns" => Kind::Namespace,
            "endpoints" | "endpoint" | "ep" => Kind::Endpoints,
            "job" | "jobs" => Kind::Job,
            "cronjob" | "cronjobs" | "cj" => Kind::CronJob,
            "configmap" | "configmaps" | "cm" => Kind::ConfigMap,
            "secret" | "secrets" => Kind::Secret,
            "networkpolicy" | "networkpolicies" | "netpol" => Kind::NetworkPolicy,
            _ => return Err(UnknownKind(s.to_string())),
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let s = String::deserialize(d)?;
        Kind::from_manifest_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected one of Pod, Deployment, DaemonSet, StatefulSet, Service, Node, Event, Namespace, Endpoints, Job, CronJob, ConfigMap, Secret, PersistentVolumeClaim, PersistentVolume, NetworkPolicy, got {s:?}"
            ))
        })
    }
}

impl schemars::JsonSchema for Kind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Kind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        schemars::json_schema!({"type": "string", "enum": kinds})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_to_their_kind() {
        for k in Kind::ALL {
            if let Some(short) = k.short_name() {
                assert_eq!(short.parse::<Kind>().unwrap(), k, "{short}");
            }
        }
    }

    #[test]
    fn aliases_case_insensitive() {
        for (s, k) in [
            ("pod", Kind::Pod),
            ("PODS", Kind::Pod),
            ("po", Kind::Pod),
            ("Deploy", Kind::Deployment),
            ("deployments", Kind::Deployment),
            ("svc", Kind::Service),
            ("no", Kind::Node),
            ("nodes", Kind::Node),
            ("ev", Kind::Event),
            ("ns", Kind::Namespace),
            ("ep", Kind::Endpoints),
            ("Endpoints", Kind::Endpoints),
            ("job", Kind::Job),
            ("jobs", Kind::Job),
            ("cj", Kind::CronJob),
            ("CronJobs", Kind::CronJob),
            ("ds", Kind::DaemonSet),
            ("DaemonSets", Kind::DaemonSet),
            ("sts", Kind::StatefulSet),
            ("pvc", Kind::PersistentVolumeClaim),
            ("PersistentVolumes", Kind::PersistentVolume),
            ("netpol", Kind::NetworkPolicy),
            ("NetworkPolicies", Kind::NetworkPolicy),
        ] {
            assert_eq!(s.parse::<Kind>().unwrap(), k, "{s}");
        }
        let e = "widgets".parse::<Kind>().unwrap_err().to_string();
        assert!(e.starts_with("unknown kind \"widgets\""), "{e}");
    }

    #[test]
    fn names_and_scope() {
        assert_eq!(Kind::Pod.to_string(), "Pod");
        assert_eq!(Kind::Deployment.plural(), "deployments");
        assert_eq!(Kind::Pod.api_version(), "shoal/v1");
        assert!(Kind::Pod.namespaced());
        assert!(!Kind::Node.namespaced());
        assert!(!Kind::Namespace.namespaced());
        assert!(Kind::Deployment.accepts_api_version("apps/v1"));
        assert!(!Kind::Deployment.accepts_api_version("v1"));
        assert!(Kind::Pod.accepts_api_version("v1"));
        assert!(Kind::Pod.accepts_api_version("shoal/v1"));
        assert!(!Kind::Pod.accepts_api_version("apps/v1"));
        assert!(Kind::Job.accepts_api_version("batch/v1"));
        assert!(Kind::CronJob.accepts_api_version("batch/v1"));
        assert!(!Kind::Job.accepts_api_version("apps/v1"));
        assert!(Kind::DaemonSet.accepts_api_version("apps/v1"));
        assert!(!Kind::DaemonSet.accepts_api_version("v1"));
        assert!(Kind::NetworkPolicy.accepts_api_version("networking.k8s.io/v1"));
        assert!(!Kind::NetworkPolicy.accepts_api_version("v1"));
        for k in Kind::ALL {
            assert_eq!(k.to_string().parse::<Kind>().unwrap(), k);
            assert_eq!(k.plural().parse::<Kind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), k);
        }
    }
}
