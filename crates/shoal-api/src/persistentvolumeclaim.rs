//! PersistentVolumeClaim (`v1`, namespaced): a request for storage that pods mount by
//! name. Shoal's built-in local-path provisioner binds a claim to a new
//! [`crate::PersistentVolume`] (a directory on one node) when the first pod using it is
//! scheduled, as Kubernetes' `WaitForFirstConsumer`; from then on the claim's pods run on
//! that node only.

use crate::meta::ObjectMeta;
use crate::quantity::ResourceList;
use crate::validation::{self as v, ValidationErrors};
use serde::{Deserialize, Serialize};

/// The storage class of Shoal's built-in provisioner, and the default class.
pub const LOCAL_PATH_CLASS: &str = "local-path";

/// The resource name of a volume's size.
pub const STORAGE: &str = "storage";

/// A persistent volume claim: `metadata`, desired `spec`, observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaim {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Access modes, size, class.
    pub spec: PersistentVolumeClaimSpec,
    /// Phase and bound capacity (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PersistentVolumeClaimStatus>,
}

/// How a volume may be mounted. Node-local volumes support only `ReadWriteOnce`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum AccessMode {
    /// Read-write by the pods of one node.
    #[default]
    ReadWriteOnce,
}

/// `Filesystem` (the only mode: a directory).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum VolumeMode {
    /// A directory mounted into the containers.
    #[default]
    Filesystem,
}

/// `resources` of a claim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeResourceRequirements {
    /// `storage`: the size asked for (recorded, not enforced: a local-path volume is a
    /// directory of the node's file system, as in k3s).
    #[serde(default)]
    pub requests: ResourceList,
}

/// Desired state of a claim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimSpec {
    /// `[ReadWriteOnce]` (at least one mode is required).
    #[serde(default)]
    pub access_modes: Vec<AccessMode>,
    /// `requests.storage`, the size.
    #[serde(default)]
    pub resources: VolumeResourceRequirements,
    /// `local-path` (the default and only class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `Filesystem` (the default and only mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<VolumeMode>,
    /// The volume bound to the claim: set by the controller when it binds one, or by hand
    /// to ask for an existing, unclaimed volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
}

/// Lifecycle phase of a claim.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ClaimPhase {
    /// Not bound yet (waiting for its first pod to be scheduled).
    #[default]
    Pending,
    /// Bound to a volume.
    Bound,
    /// Its volume was deleted.
    Lost,
}

impl ClaimPhase {
    /// `Bound` etc.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimPhase::Pending => "Pending",
            ClaimPhase::Bound => "Bound",
            ClaimPhase::Lost => "Lost",
        }
    }
}

/// Observed state of a claim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimStatus {
    /// `Pending`, `Bound` or `Lost`.
    #[serde(default)]
    pub phase: ClaimPhase,
    /// The bound volume's access modes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<AccessMode>,
    /// The bound volume's capacity.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub capacity: ResourceList,
}

impl PersistentVolumeClaim {
    /// The storage class in force (`local-path` when unset).
    pub fn storage_class(&self) -> &str {
        self.spec
            .storage_class_name
            .as_deref()
            .unwrap_or(LOCAL_PATH_CLASS)
    }

    /// The phase (`Pending` without a status).
    pub fn phase(&self) -> ClaimPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }

    /// The bound volume's name, when the claim is bound.
    pub fn bound_volume(&self) -> Option<&str> {
        if self.phase() == ClaimPhase::Bound {
            self.spec.volume_name.as_deref().filter(|n| !n.is_empty())
        } else {
            None
        }
    }

    /// Checks metadata and spec.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata.validate(
            crate::Kind::PersistentVolumeClaim,
            v::check_dns1123_subdomain,
            &mut errs,
        );
        self.spec.validate("spec", &mut errs);
        errs.into_result()
    }
}

impl PersistentVolumeClaimSpec {
    /// Checks access modes, size, class and volume name; paths start with `path`
    /// (`spec`, or `spec.volumeClaimTemplates[0].spec` in a StatefulSet).
    pub fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        if self.access_modes.is_empty() {
            errs.push(
                v::join(path, "accessModes"),
                "at least one access mode is required (ReadWriteOnce)",
            );
        }
        let storage = v::join(path, "resources.requests.storage");
        match self.resources.requests.get(STORAGE) {
            None => errs.push(&storage, "required field is missing (e.g. 1Gi)"),
            Some(q) if q.is_negative() || q.is_zero() => {
                errs.push(&storage, format!("must be positive, got {:?}", q.as_str()))
            }
            Some(_) => {}
        }
        for k in self.resources.requests.keys().filter(|k| *k != STORAGE) {
            errs.push(
                v::join(path, &format!("resources.requests.{k}")),
                "only storage may be requested for a volume",
            );
        }
        if let Some(c) = &self.storage_class_name
            && c != LOCAL_PATH_CLASS
        {
            errs.push(
                v::join(path, "storageClassName"),
                format!(
                    "storage class {c:?} does not exist: Shoal has the built-in {LOCAL_PATH_CLASS:?} class (the default; leave the field out)"
                ),
            );
        }
        if let Some(n) = &self.volume_name {
            errs.check(v::join(path, "volumeName"), v::check_dns1123_subdomain(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const PVC: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
";

    fn error(text: &str) -> String {
        parse_manifests("pvc.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn parses_with_defaults() {
        let objs = parse_manifests("pvc.yaml", PVC).unwrap();
        let Object::PersistentVolumeClaim(c) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(c.storage_class(), LOCAL_PATH_CLASS);
        assert_eq!(c.phase(), ClaimPhase::Pending);
        assert_eq!(c.bound_volume(), None);
        assert_eq!(c.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = error(&PVC.replace("accessModes: [ReadWriteOnce]", "accessModes: []"));
        assert!(
            e.contains("spec.accessModes: at least one access mode"),
            "{e}"
        );
        let e = error(&PVC.replace("ReadWriteOnce", "ReadWriteMany"));
        assert!(
            e.contains("spec.accessModes[0]") && e.contains("not supported by Shoal"),
            "{e}"
        );
        let e = error(&PVC.replace("storage: 1Gi", "storage: 0"));
        assert!(
            e.contains("spec.resources.requests.storage: must be positive"),
            "{e}"
        );
        let e = error(&PVC.replace("{storage: 1Gi}", "{cpu: 1}"));
        assert!(
            e.contains("spec.resources.requests.storage: required field is missing"),
            "{e}"
        );
        let e = error(&format!("{PVC}  storageClassName: standard\n"));
        assert!(
            e.contains("spec.storageClassName: storage class \"standard\" does not exist"),
            "{e}"
        );
        let ok = format!("{PVC}  storageClassName: local-path\n");
        parse_manifests("pvc.yaml", &ok).unwrap();
        let e = error(&format!("{PVC}  selector: {{matchLabels: {{a: b}}}}\n"));
        assert!(
            e.contains("spec.selector") && e.contains("not supported by Shoal"),
            "{e}"
        );
    }
}
