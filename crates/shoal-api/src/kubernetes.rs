//! What Kubernetes has and Shoal does not: the fields, values and kinds a manifest
//! written for Kubernetes may carry. Decoding reports them as "not supported by Shoal"
//! with their path, apart from typos, which get a "did you mean" among the fields Shoal
//! knows ([`suggest`]). The lists follow docs/manifests.md, "Kubernetes fields that are
//! not supported"; a field Shoal learns must leave them.

use crate::kind::Kind;

/// ObjectMeta fields Shoal does not keep.
const METADATA: &[&str] = &[
    "generateName",
    "finalizers",
    "managedFields",
    "selfLink",
    "deletionGracePeriodSeconds",
];

/// ObjectMeta fields a Deployment's pod template may not have (only labels and
/// annotations are kept).
const TEMPLATE_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const POD_SPEC: &[&str] = &[
    "ephemeralContainers",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "priority",
    "preemptionPolicy",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "hostUsers",
    "shareProcessNamespace",
    "dnsConfig",
    "schedulerName",
    "schedulingGates",
    "runtimeClassName",
    "activeDeadlineSeconds",
    "hostAliases",
    "enableServiceLinks",
    "overhead",
    "readinessGates",
    "setHostnameAsFQDN",
    "os",
    "resourceClaims",
    "resources",
];

const CONTAINER: &[&str] = &[
    "terminationMessagePath",
    "terminationMessagePolicy",
    "resizePolicy",
    "restartPolicy",
    "volumeDevices",
];

const SECURITY_CONTEXT: &[&str] = &[
    "procMount",
    "seLinuxOptions",
    "windowsOptions",
    "appArmorProfile",
];

const POD_SECURITY_CONTEXT: &[&str] = &[
    "fsGroupChangePolicy",
    "supplementalGroupsPolicy",
    "sysctls",
    "seLinuxOptions",
    "seLinuxChangePolicy",
    "windowsOptions",
    "appArmorProfile",
];

const PROBE: &[&str] = &["terminationGracePeriodSeconds"];
const VOLUME_MOUNT: &[&str] = &[
    "subPath",
    "subPathExpr",
    "mountPropagation",
    "recursiveReadOnly",
];

const VOLUME: &[&str] = &[
    "ephemeral",
    "nfs",
    "csi",
    "iscsi",
    "cephfs",
    "rbd",
    "glusterfs",
    "fc",
    "flexVolume",
    "gitRepo",
    "image",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "azureFile",
    "vsphereVolume",
];

const SERVICE_SPEC: &[&str] = &[
    "clusterIPs",
    "externalIPs",
    "externalName",
    "sessionAffinity",
    "sessionAffinityConfig",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "ipFamilies",
    "ipFamilyPolicy",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "loadBalancerClass",
    "allocateLoadBalancerNodePorts",
    "healthCheckNodePort",
    "publishNotReadyAddresses",
    "trafficDistribution",
];

const PVC_SPEC: &[&str] = &[
    "selector",
    "dataSource",
    "dataSourceRef",
    "volumeAttributesClassName",
];

const PV_SPEC: &[&str] = &[
    "hostPath",
    "local",
    "nfs",
    "csi",
    "iscsi",
    "cephfs",
    "rbd",
    "fc",
    "mountOptions",
    "volumeAttributesClassName",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "azureFile",
];

const NODE_SPEC: &[&str] = &["podCIDRs", "providerID", "configSource", "externalID"];

const EVENT: &[&str] = &[
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
    "series",
    "eventTime",
];

/// Kinds of Kubernetes' own API that Shoal does not have.
const KINDS: &[&str] = &[
    "ReplicaSet",
    "ReplicationController",
    "Ingress",
    "IngressClass",
    "StorageClass",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "PriorityClass",
    "LimitRange",
    "ResourceQuota",
    "EndpointSlice",
    "CustomResourceDefinition",
];

/// The keys of a field path, without list indices: `spec.containers[0].envFrom` is
/// `[spec, containers, envFrom]`.
fn keys(path: &str) -> Vec<&str> {
    path.split(['.', '['])
        .filter_map(|s| {
            let s = s.trim_end_matches(']');
            (!s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
        })
        .collect()
}

/// The path of the pod spec inside objects of `kind`, if it has one.
fn pod_spec(kind: Kind) -> Option<&'static [&'static str]> {
    match kind {
        Kind::Pod => Some(&["spec"]),
        Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet => {
            Some(&["spec", "template", "spec"])
        }
        _ => None,
    }
}

/// The Kubernetes fields of the mapping at `parent` (keys only) in an object of `kind`.
fn fields_at(kind: Kind, parent: &[&str]) -> &'static [&'static str] {
    if parent == ["metadata"] {
        return METADATA;
    }
    if let Some(pod) = pod_spec(kind)
        && let Some(rest) = parent.strip_prefix(pod)
    {
        return match rest {
            [] => POD_SPEC,
            ["securityContext"] => POD_SECURITY_CONTEXT,
            ["containers"] => CONTAINER,
            ["containers", "securityContext"] => SECURITY_CONTEXT,
            [
                "containers",
                "livenessProbe" | "readinessProbe" | "startupProbe",
            ] => PROBE,
            ["containers", "lifecycle"] => &["stopSignal"],
            ["containers", "lifecycle", "postStart" | "preStop"] => &["tcpSocket"],
            ["containers", "ports"] => &["hostIP"],
            ["containers", "volumeMounts"] => VOLUME_MOUNT,
            ["containers", "resources"] => &["claims"],
            ["volumes"] => VOLUME,
            ["volumes", "emptyDir"] => &["medium", "sizeLimit"],
            ["volumes", "hostPath"] => &["type"],
            _ => &[],
        };
    }
    match (kind, parent) {
        (Kind::Deployment, ["spec"]) => &["minReadySeconds", "progressDeadlineSeconds"],
        (Kind::Deployment, ["spec", "template", "metadata"]) => TEMPLATE_METADATA,
        (Kind::DaemonSet, ["spec"]) => &["minReadySeconds", "revisionHistoryLimit"],
        (Kind::DaemonSet, ["spec", "template", "metadata"]) => TEMPLATE_METADATA,
        (Kind::DaemonSet, ["spec", "updateStrategy", "rollingUpdate"]) => &["maxSurge"],
        (Kind::StatefulSet, ["spec"]) => &[
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
            "ordinals",
        ],
        (Kind::StatefulSet, ["spec", "template", "metadata"]) => TEMPLATE_METADATA,
        (Kind::StatefulSet, ["spec", "updateStrategy", "rollingUpdate"]) => &["maxUnavailable"],
        (Kind::StatefulSet, ["spec", "volumeClaimTemplates"]) => &["apiVersion", "kind", "status"],
        (Kind::StatefulSet, ["spec", "volumeClaimTemplates", "spec"]) => PVC_SPEC,
        (Kind::PersistentVolumeClaim, ["spec"]) => PVC_SPEC,
        (Kind::PersistentVolumeClaim, ["spec", "resources"]) => &["limits"],
        (Kind::StatefulSet, ["spec", "volumeClaimTemplates", "spec", "resources"]) => &["limits"],
        (Kind::PersistentVolume, ["spec"]) => PV_SPEC,
        (Kind::Service, []) => &["status"],
        (Kind::Service, ["spec"]) => SERVICE_SPEC,
        (Kind::Service, ["spec", "ports"]) => &["appProtocol"],
        (Kind::Namespace, []) => &["spec"],
        (Kind::Node, ["spec"]) => NODE_SPEC,
        (Kind::Event, []) => EVENT,
        _ => &[],
    }
}

/// True when `path` (`spec.containers[0].envFrom`) names a field that Kubernetes has in
/// objects of `kind` and Shoal does not.
pub fn is_kubernetes_field(kind: Kind, path: &str) -> bool {
    let keys = keys(path);
    match keys.split_last() {
        Some((field, parent)) => fields_at(kind, parent).contains(field),
        None => false,
    }
}

/// True when `value` at `path` is one Kubernetes accepts there and Shoal does not
/// (a Service's `type: LoadBalancer`, a `SCTP` protocol, a selector's `Gt`).
pub fn is_kubernetes_value(kind: Kind, path: &str, value: &str) -> bool {
    let keys = keys(path);
    matches!(
        (kind, keys.as_slice(), value),
        (
            Kind::Service,
            ["spec", "type"],
            "LoadBalancer" | "ExternalName"
        ) | (_, [.., "protocol"], "SCTP")
            | (_, [.., "matchExpressions", "operator"], "Gt" | "Lt")
            | (
                _,
                [.., "accessModes"],
                "ReadWriteMany" | "ReadOnlyMany" | "ReadWriteOncePod"
            )
            | (_, [.., "volumeMode"], "Block")
            | (
                _,
                [.., "nodeSelectorTerms", "matchExpressions", "operator"],
                "NotIn" | "Exists" | "DoesNotExist"
            )
    )
}

/// True when `kind` is a kind of Kubernetes' own API that Shoal does not have.
pub fn is_kubernetes_kind(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// The candidate closest to `got` when it is close enough to be a typo of it: equal but
/// for case, or within 1 (short names) or 2 (names of 5 or more characters) edits,
/// transpositions counting as one.
pub fn suggest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = got.to_lowercase();
    let limit = if got.chars().count() >= 5 { 2 } else { 1 };
    candidates
        .into_iter()
        .filter(|c| *c != got)
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_their_indices() {
        assert_eq!(
            keys("spec.template.spec.containers[10].env[0].valueFrom"),
            ["spec", "template", "spec", "containers", "env", "valueFrom"]
        );
        assert!(keys("").is_empty());
    }

    #[test]
    fn kubernetes_fields_by_kind_and_place() {
        assert!(is_kubernetes_field(
            Kind::Pod,
            "spec.containers[0].startupProbe.terminationGracePeriodSeconds"
        ));
        assert!(is_kubernetes_field(
            Kind::Deployment,
            "spec.template.spec.containers[2].lifecycle.preStop.tcpSocket"
        ));
        assert!(is_kubernetes_field(
            Kind::Pod,
            "spec.securityContext.sysctls"
        ));
        assert!(is_kubernetes_field(
            Kind::Pod,
            "spec.containers[0].securityContext.procMount"
        ));
        assert!(!is_kubernetes_field(
            Kind::Pod,
            "spec.containers[0].securityContext.runAsNonRoot"
        ));
        assert!(is_kubernetes_field(
            Kind::Deployment,
            "spec.template.spec.volumes[0].nfs"
        ));
        assert!(is_kubernetes_field(Kind::Pod, "spec.hostNetwork"));
        assert!(is_kubernetes_field(Kind::Pod, "metadata.finalizers"));
        assert!(is_kubernetes_field(Kind::Service, "spec.sessionAffinity"));
        assert!(is_kubernetes_field(
            Kind::Deployment,
            "spec.minReadySeconds"
        ));
        // The same name elsewhere is not the Kubernetes field.
        assert!(!is_kubernetes_field(Kind::Pod, "spec.lifecycle"));
        assert!(!is_kubernetes_field(Kind::Service, "spec.hostNetwork"));
        assert!(!is_kubernetes_field(Kind::Pod, "spec.contaners"));
        assert!(!is_kubernetes_field(Kind::Pod, ""));
    }

    #[test]
    fn kubernetes_values_and_kinds() {
        assert!(is_kubernetes_value(
            Kind::Service,
            "spec.type",
            "LoadBalancer"
        ));
        assert!(!is_kubernetes_value(Kind::Service, "spec.type", "Balanced"));
        assert!(is_kubernetes_value(
            Kind::Pod,
            "spec.containers[0].ports[1].protocol",
            "SCTP"
        ));
        assert!(is_kubernetes_kind("ReplicaSet"));
        assert!(!is_kubernetes_kind("StatefulSet"));
        assert!(!is_kubernetes_kind("Widget"));
    }

    #[test]
    fn typos_get_the_closest_field() {
        let fields = ["containers", "volumes", "nodeName", "hostname"];
        assert_eq!(suggest("contaners", fields), Some("containers"));
        assert_eq!(suggest("contianers", fields), Some("containers"));
        assert_eq!(suggest("Containers", fields), Some("containers"));
        assert_eq!(suggest("nodename", fields), Some("nodeName"));
        assert_eq!(suggest("replicas", fields), None);
        assert_eq!(suggest("xy", ["ab"]), None);
    }
}
