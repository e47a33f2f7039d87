//! Local persistent volumes on this node (docs/manifests.md, "PersistentVolume"): the
//! directory of volume `NAME` is `DATA/volumes/NAME`, made when the first pod mounting
//! it starts (mode 0777, as k3s' local-path provisioner makes it, so that containers
//! running as any user can write), kept across pod deletions and agent restarts, and
//! removed, with the PersistentVolume object, once the volume is `Released` with reclaim
//! policy `Delete` ([`reclaim_pass`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shoal_api::{PersistentVolume, PersistentVolumeClaim, ReclaimPolicy, VolumePhase};
use shoal_client::Client;
use tracing::{info, warn};

use crate::podconfig::ConfigError;

/// `DATA/volumes`.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("volumes")
}

/// The directory of volume `name`: `DATA/volumes/NAME`.
pub fn volume_dir(data_dir: &Path, name: &str) -> PathBuf {
    root(data_dir).join(name)
}

/// The volumes of `node` whose directory (and object) are to be removed: `Released`
/// with reclaim policy `Delete`.
pub fn reclaimable<'a>(volumes: &'a [PersistentVolume], node: &str) -> Vec<&'a PersistentVolume> {
    volumes
        .iter()
        .filter(|v| {
            v.node() == Some(node)
                && v.phase() == VolumePhase::Released
                && v.spec.persistent_volume_reclaim_policy == ReclaimPolicy::Delete
        })
        .collect()
}

/// Which volume of this node claim `claim` (of a pod bound here) mounts, or why it
/// cannot be mounted (yet).
pub fn mountable<'a>(
    claim_name: &str,
    claim: Option<&'a PersistentVolumeClaim>,
    volume: Option<&'a PersistentVolume>,
    node: &str,
) -> Result<&'a str, String> {
    let claim = claim.ok_or_else(|| format!("persistentvolumeclaim {claim_name:?} not found"))?;
    let name = claim
        .bound_volume()
        .ok_or_else(|| format!("persistentvolumeclaim {claim_name:?} is not bound yet"))?;
    let volume = volume.ok_or_else(|| {
        format!("persistentvolumeclaim {claim_name:?}: its volume {name:?} does not exist")
    })?;
    match volume.node() {
        Some(n) if n == node => Ok(name),
        other => Err(format!(
            "persistentvolumeclaim {claim_name:?}: its volume {name:?} is on node {:?}, not on {node:?}",
            other.unwrap_or("")
        )),
    }
}

/// Makes the directory of volume `name` (and `DATA/volumes`) if missing.
pub fn ensure_dir(data_dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = volume_dir(data_dir, name);
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(dir)
}

/// The directories of `pod`'s `persistentVolumeClaim` volumes, by volume name, made if
/// missing; an error names the claim.
pub async fn claim_dirs(
    ctl: &Client,
    data_dir: &Path,
    node: &str,
    pod: &shoal_api::Pod,
) -> Result<std::collections::BTreeMap<String, PathBuf>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut dirs = std::collections::BTreeMap::new();
    for v in &pod.spec.volumes {
        let Some(src) = &v.persistent_volume_claim else {
            continue;
        };
        let claim = ctl
            .get::<PersistentVolumeClaim>(ns, &src.claim_name)
            .await
            .map_err(|e| ConfigError(format!("persistentvolumeclaim {:?}: {e}", src.claim_name)))?;
        let volume = match claim.as_ref().and_then(|c| c.bound_volume()) {
            Some(name) => ctl
                .get::<PersistentVolume>("", name)
                .await
                .map_err(|e| ConfigError(format!("persistentvolume {name:?}: {e}")))?,
            None => None,
        };
        let name = mountable(&src.claim_name, claim.as_ref(), volume.as_ref(), node)
            .map_err(ConfigError)?;
        let dir = ensure_dir(data_dir, name)
            .map_err(|e| ConfigError(format!("volume {name:?}: creating its directory: {e}")))?;
        dirs.insert(v.name.clone(), dir);
    }
    Ok(dirs)
}

/// Removes the directory of every reclaimable volume of `node`, then the volume object
/// (on its revision, so that a volume changed meanwhile is looked at again).
pub async fn reclaim_pass(ctl: &Client, data_dir: &Path, node: &str) {
    let volumes = match ctl
        .list::<PersistentVolume>(&shoal_client::ListParams::default())
        .await
    {
        Ok((v, _)) => v,
        Err(e) => {
            warn!("volume reclaim: listing volumes: {e}");
            return;
        }
    };
    for v in reclaimable(&volumes, node) {
        let name = &v.metadata.name;
        let dir = volume_dir(data_dir, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!("volume {name}: removing {}: {e}", dir.display());
                continue;
            }
        }
        let rv = v
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        match ctl.delete::<PersistentVolume>("", name, rv).await {
            Ok(_) => {
                info!(volume = %name, dir = %dir.display(), "released volume reclaimed (Delete)")
            }
            Err(e) => warn!("volume {name}: deleting the object: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, node: &str, phase: &str, policy: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": policy,
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn only_released_delete_volumes_of_this_node_are_reclaimed() {
        let vols = vec![
            pv("a", "n1", "Released", "Delete"),
            pv("b", "n1", "Released", "Retain"),
            pv("c", "n1", "Bound", "Delete"),
            pv("d", "n2", "Released", "Delete"),
        ];
        let names: Vec<&str> = reclaimable(&vols, "n1")
            .iter()
            .map(|v| v.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn claims_mount_only_bound_volumes_of_this_node() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeName": "pvc-1"},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
        let v = pv("pvc-1", "n1", "Bound", "Delete");
        assert_eq!(mountable("data", Some(&claim), Some(&v), "n1"), Ok("pvc-1"));
        let e = mountable("data", Some(&claim), Some(&v), "n2").unwrap_err();
        assert!(e.contains("is on node \"n1\", not on \"n2\""), "{e}");
        let e = mountable("data", None, None, "n1").unwrap_err();
        assert_eq!(e, "persistentvolumeclaim \"data\" not found");
        let mut pending = claim.clone();
        pending.status = None;
        let e = mountable("data", Some(&pending), None, "n1").unwrap_err();
        assert!(e.contains("is not bound yet"), "{e}");
    }

    #[test]
    fn directories_are_made_once_and_writable_by_all() {
        let tmp = tempfile::tempdir().unwrap();
        let d = ensure_dir(tmp.path(), "pvc-1").unwrap();
        assert_eq!(d, tmp.path().join("volumes/pvc-1"));
        std::fs::write(d.join("f"), "x").unwrap();
        let again = ensure_dir(tmp.path(), "pvc-1").unwrap();
        assert_eq!(std::fs::read_to_string(again.join("f")).unwrap(), "x");
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
    }
}
