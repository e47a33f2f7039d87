//! Names the agent gives runtime objects: a pod's sandbox is named after its
//! uid, a container `<sandbox>-<container>-r<base>` where `base` is the
//! restart count of the earlier incarnations (a liveness restart recreates
//! the container), so restart counts survive agent restarts without state.

use shoal_api::Pod;

/// The sandbox name of a pod: the first 16 hex digits of its uid (or, without
/// a uid, its namespace and name made safe).
pub fn sandbox_name(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) => {
            let hex: String = uid
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(16)
                .collect();
            format!("p{hex}")
        }
        None => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let raw = format!("{ns}_{}", pod.metadata.name);
            raw.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(90)
                .collect()
        }
    }
}

/// The container id of incarnation `base` of `container` in `sandbox`.
pub fn container_id(sandbox: &str, container: &str, base: u32) -> String {
    format!("{sandbox}-{container}-r{base}")
}

/// The `base` of a container id made by [`container_id`].
pub fn base_of(id: &str) -> u32 {
    id.rsplit_once("-r")
        .and_then(|(_, b)| b.parse().ok())
        .unwrap_or(0)
}

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::ObjectMeta;

    #[test]
    fn ids_round_trip() {
        let mut p = Pod {
            metadata: ObjectMeta::named("default", "web"),
            ..Pod::default()
        };
        assert_eq!(sandbox_name(&p), "default_web");
        p.metadata.uid = Some("0b9f2c1e-1234-4abc-8def-0123456789ab".into());
        let sb = sandbox_name(&p);
        assert_eq!(sb, "p0b9f2c1e12344abc");
        let id = container_id(&sb, "my-app", 7);
        assert_eq!(id, "p0b9f2c1e12344abc-my-app-r7");
        assert_eq!(base_of(&id), 7);
        assert_eq!(base_of("x-run-r"), 0);
        assert_eq!(pod_key(&p), "default/web");
    }
}
