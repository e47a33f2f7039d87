//! PersistentVolume (`v1`, cluster-scoped): a directory on one node, made by the
//! built-in local-path provisioner for a [`crate::PersistentVolumeClaim`] (or by hand).
//! Its data lives in `DATA/volumes/<name>` on that node (`DATA`: the agent's
//! `--data-dir`) and survives pods and agent restarts. When its claim is deleted it is
//! `Released`; with reclaim policy `Delete` the node's agent then removes the directory
//! and the volume, with `Retain` both stay.

use crate::meta::ObjectMeta;
use crate::persistentvolumeclaim::{AccessMode, LOCAL_PATH_CLASS, STORAGE, VolumeMode};
use crate::quantity::ResourceList;
use crate::validation::{self as v, ValidationErrors};
use serde::{Deserialize, Serialize};

/// The node label key a volume's node affinity names its node with (its value is the
/// Node's name, as Kubernetes' `kubernetes.io/hostname` usually is).
pub const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

/// Annotation the provisioner puts on the volumes it makes (Kubernetes' name).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// The provisioner's name in [`PROVISIONED_BY`].
pub const LOCAL_PATH_PROVISIONER: &str = "shoal.io/local-path";

/// A persistent volume: `metadata`, `spec`, `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolume {
    /// Name and server-set fields (no namespace).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Capacity, node, claim and reclaim policy.
    pub spec: PersistentVolumeSpec,
    /// Phase (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PersistentVolumeStatus>,
}

/// What happens to a volume when its claim is deleted.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ReclaimPolicy {
    /// The node's agent removes the directory, then the volume (the provisioner's
    /// default, as the default StorageClass of Kubernetes and k3s).
    Delete,
    /// The volume and its data stay (`Released`) until an admin deletes them (the
    /// default of a volume made by hand).
    #[default]
    Retain,
}

impl ReclaimPolicy {
    /// `Delete` or `Retain`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimPolicy::Delete => "Delete",
            ReclaimPolicy::Retain => "Retain",
        }
    }
}

/// The claim a volume is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimReference {
    /// `PersistentVolumeClaim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
    /// The claim's uid (unset: the claim of that name, when it asks for this volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// `In` (the only operator of a volume's node affinity).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum NodeSelectorOperator {
    /// The label's value is one of `values`.
    #[default]
    In,
}

/// `{key: kubernetes.io/hostname, operator: In, values: [NODE]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorRequirement {
    /// `kubernetes.io/hostname`.
    pub key: String,
    /// `In`.
    pub operator: NodeSelectorOperator,
    /// One node name.
    #[serde(default)]
    pub values: Vec<String>,
}

/// One term of a node selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorTerm {
    /// The requirements (one, naming the node).
    #[serde(default)]
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

/// `required.nodeSelectorTerms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    /// The terms (one).
    #[serde(default)]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// `spec.nodeAffinity`: the node that holds the volume's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeNodeAffinity {
    /// The node, as one term with one `kubernetes.io/hostname In [NODE]` expression.
    pub required: NodeSelector,
}

impl VolumeNodeAffinity {
    /// The affinity of a volume on node `node`.
    pub fn node(node: &str) -> VolumeNodeAffinity {
        VolumeNodeAffinity {
            required: NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: HOSTNAME_KEY.to_string(),
                        operator: NodeSelectorOperator::In,
                        values: vec![node.to_string()],
                    }],
                }],
            },
        }
    }
}

/// Desired state of a volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeSpec {
    /// `storage`: the size (recorded, not enforced).
    #[serde(default)]
    pub capacity: ResourceList,
    /// `[ReadWriteOnce]`.
    #[serde(default)]
    pub access_modes: Vec<AccessMode>,
    /// `Delete` or `Retain` (default `Retain`; the provisioner sets `Delete`).
    #[serde(default)]
    pub persistent_volume_reclaim_policy: ReclaimPolicy,
    /// `local-path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `Filesystem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<VolumeMode>,
    /// The claim it is bound to (set by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ClaimReference>,
    /// The node holding the directory (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<VolumeNodeAffinity>,
}

/// Lifecycle phase of a volume.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum VolumePhase {
    /// Not bound to a claim.
    #[default]
    Available,
    /// Bound to a claim.
    Bound,
    /// Its claim was deleted (the data is still there).
    Released,
    /// Reclaiming failed.
    Failed,
}

impl VolumePhase {
    /// `Bound` etc.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumePhase::Available => "Available",
            VolumePhase::Bound => "Bound",
            VolumePhase::Released => "Released",
            VolumePhase::Failed => "Failed",
        }
    }
}

/// Observed state of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeStatus {
    /// `Available`, `Bound`, `Released` or `Failed`.
    #[serde(default)]
    pub phase: VolumePhase,
    /// Why (for `Failed`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl PersistentVolume {
    /// The node holding the directory (from `spec.nodeAffinity`).
    pub fn node(&self) -> Option<&str> {
        let a = self.spec.node_affinity.as_ref()?;
        let e = a
            .required
            .node_selector_terms
            .first()?
            .match_expressions
            .first()?;
        (e.key == HOSTNAME_KEY).then(|| e.values.first().map(String::as_str))?
    }

    /// The phase (`Available` without a status).
    pub fn phase(&self) -> VolumePhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }

    /// Checks name, capacity, access modes, class and node affinity.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata.validate(
            crate::Kind::PersistentVolume,
            v::check_dns1123_subdomain,
            &mut errs,
        );
        let spec = &self.spec;
        if spec.access_modes.is_empty() {
            errs.push(
                "spec.accessModes",
                "at least one access mode is required (ReadWriteOnce)",
            );
        }
        match spec.capacity.get(STORAGE) {
            None => errs.push("spec.capacity.storage", "required field is missing"),
            Some(q) if q.is_negative() || q.is_zero() => errs.push(
                "spec.capacity.storage",
                format!("must be positive, got {:?}", q.as_str()),
            ),
            Some(_) => {}
        }
        if let Some(c) = &spec.storage_class_name
            && c != LOCAL_PATH_CLASS
        {
            errs.push(
                "spec.storageClassName",
                format!("storage class {c:?} does not exist: Shoal has {LOCAL_PATH_CLASS:?}"),
            );
        }
        let affinity = "spec.nodeAffinity.required.nodeSelectorTerms";
        match &spec.node_affinity {
            None => errs.push(
                "spec.nodeAffinity",
                format!("required: a local volume lives on one node ({HOSTNAME_KEY} In [NODE])"),
            ),
            Some(a) => {
                let terms = &a.required.node_selector_terms;
                let ok = terms.len() == 1
                    && terms[0].match_expressions.len() == 1
                    && terms[0].match_expressions[0].key == HOSTNAME_KEY
                    && terms[0].match_expressions[0].values.len() == 1;
                if !ok {
                    errs.push(
                        affinity,
                        format!(
                            "must be one term with one expression {{key: {HOSTNAME_KEY}, operator: In, values: [NODE]}}"
                        ),
                    );
                } else if let Some(n) = self.node() {
                    errs.check(
                        format!("{affinity}[0].matchExpressions[0].values[0]"),
                        v::check_dns1123_subdomain(n),
                    );
                }
            }
        }
        if let Some(c) = &spec.claim_ref {
            errs.check("spec.claimRef.name", v::check_dns1123_subdomain(&c.name));
            errs.check(
                "spec.claimRef.namespace",
                v::check_dns1123_label(&c.namespace),
            );
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const PV: &str = "apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [node1]}
";

    #[test]
    fn parses_and_names_its_node() {
        let objs = parse_manifests("pv.yaml", PV).unwrap();
        let Object::PersistentVolume(p) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(p.node(), Some("node1"));
        assert_eq!(
            p.spec.persistent_volume_reclaim_policy,
            ReclaimPolicy::Retain
        );
        assert_eq!(p.metadata.namespace, None);
        assert_eq!(
            VolumeNodeAffinity::node("node1"),
            p.spec.node_affinity.clone().unwrap()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_manifests("pv.yaml", &PV.replace("kubernetes.io/hostname", "zone"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.nodeAffinity.required.nodeSelectorTerms: must be one term"),
            "{e}"
        );
        let e = parse_manifests("pv.yaml", &PV.replace("  capacity: {storage: 1Gi}\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.capacity.storage: required field is missing"),
            "{e}"
        );
        let e = parse_manifests(
            "pv.yaml",
            &PV.replace(
                "metadata: {name: pv1}",
                "metadata: {name: pv1, namespace: a}",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster-scoped"), "{e}");
    }
}
