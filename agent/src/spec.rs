//! From a pod's container to the runtime's `ContainerSpec` and sandbox config.

use std::path::PathBuf;
use std::time::Duration;

use shoal_api::{
    Container, Pod, RestartPolicy, SeccompProfileType, SecurityContext, capability_numbers,
};
use shoal_runtime::{
    Backoff, ContainerSpec, Mount, MountSource, PodSandboxConfig, Resources,
    RestartPolicy as RtPolicy, Security,
};

/// The sandbox of `pod` named `sandbox`: hostname = the pod's `spec.hostname`
/// or name (cut to 63 characters).
pub fn sandbox_config(pod: &Pod, sandbox: &str) -> PodSandboxConfig {
    let host = pod
        .spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone());
    PodSandboxConfig {
        name: sandbox.to_string(),
        hostname: Some(host.chars().take(63).collect()),
        ..PodSandboxConfig::default()
    }
}

/// The grace period of a pod.
pub fn grace(pod: &Pod) -> Duration {
    Duration::from_secs(pod.spec.termination_grace_period_seconds.max(0) as u64)
}

/// The runtime spec of container `c` of `pod` with id `id`; an error names the field.
/// `resolved` holds the environment and volume directories of ConfigMaps, Secrets and
/// pod fields ([`crate::podconfig`]); `$(VAR)` in `command` and `args` is expanded from it.
pub fn container_spec(
    pod: &Pod,
    c: &Container,
    id: &str,
    backoff_initial: Duration,
    resolved: &crate::podconfig::Resolved,
) -> Result<ContainerSpec, String> {
    let mut s = ContainerSpec::new(id, c.image.clone());
    s.name = c.name.clone();
    s.stdin = c.stdin;
    s.tty = c.tty;
    match &resolved.env {
        Some(env) => {
            (s.command, s.args) = crate::podconfig::expand_command(c, env);
            s.env = env.clone();
        }
        None => {
            s.command = c.command.clone();
            s.args = c.args.clone();
            s.env = c
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
        }
    }
    s.working_dir = c.working_dir.clone().filter(|w| !w.is_empty());
    let sc = c.effective_security(pod.spec.security_context.as_ref());
    s.user = match (sc.run_as_user, sc.run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, _) => None,
    };
    for vm in &c.volume_mounts {
        let vol = pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| {
                format!(
                    "container {}: volumeMounts {}: no volume named {:?} in spec.volumes",
                    c.name, vm.mount_path, vm.name
                )
            })?;
        let (source, ro) = if let Some(claim) = &vol.persistent_volume_claim {
            let dir = resolved.volume_dirs.get(&vol.name).ok_or_else(|| {
                format!(
                    "container {}: volume {:?}: the directory of claim {:?} is not known",
                    c.name, vol.name, claim.claim_name
                )
            })?;
            (MountSource::HostPath(dir.clone()), claim.read_only)
        } else if crate::podconfig::is_config_volume(vol) {
            let dir = resolved.volume_dirs.get(&vol.name).ok_or_else(|| {
                format!(
                    "container {}: volume {:?}: its files were not written",
                    c.name, vol.name
                )
            })?;
            // Read-only always: the agent owns these files and swaps them on updates.
            (MountSource::HostPath(dir.clone()), true)
        } else {
            match (&vol.empty_dir, &vol.host_path) {
                (_, Some(hp)) => (MountSource::HostPath(PathBuf::from(&hp.path)), hp.read_only),
                _ => (MountSource::EmptyDir(vol.name.clone()), false),
            }
        };
        s.mounts.push(Mount {
            source,
            destination: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only || ro,
        });
    }
    let q = |list: &shoal_api::ResourceList, k: &str| list.get(k).cloned();
    let limits = &c.resources.limits;
    let requests = &c.resources.requests;
    let cpu_limit = q(limits, "cpu").map(|x| x.as_millis().max(1) as u64);
    s.resources = Resources {
        memory_bytes: q(limits, "memory").map(|x| x.as_bytes().max(0) as u64),
        cpu_request_millis: q(requests, "cpu")
            .map(|x| x.as_millis().max(1) as u64)
            .or(cpu_limit),
        cpu_limit_millis: cpu_limit,
        pids: q(limits, "pids")
            .or_else(|| q(requests, "pids"))
            .map(|x| x.as_i64().max(1) as u64),
    };
    // Init containers run to completion: `Always` restarts them only after a failure.
    let is_init = pod.spec.init_containers.iter().any(|i| i.name == c.name);
    let policy = if is_init {
        crate::plan::init_restart_policy(pod.spec.restart_policy)
    } else {
        pod.spec.restart_policy
    };
    s.restart_policy = match policy {
        RestartPolicy::Always => RtPolicy::Always,
        RestartPolicy::OnFailure => RtPolicy::OnFailure,
        RestartPolicy::Never => RtPolicy::Never,
    };
    s.backoff = Backoff {
        initial: backoff_initial,
        ..Backoff::default()
    };
    s.grace_period = grace(pod);
    s.security = security(pod, c, &sc)?;
    Ok(s)
}

/// The runtime's security settings of container `c` of `pod`, whose effective
/// `securityContext` (the pod's merged in) is `sc` (validation refuses the same errors
/// earlier; this names the field too).
fn security(pod: &Pod, c: &Container, sc: &SecurityContext) -> Result<Security, String> {
    let field = |f: &str| format!("container {}: securityContext.{f}", c.name);
    if sc
        .seccomp_profile
        .as_ref()
        .is_some_and(|p| p.kind == SeccompProfileType::Localhost)
    {
        return Err(format!(
            "{}: Localhost profiles are not supported; use RuntimeDefault or Unconfined",
            field("seccompProfile.type")
        ));
    }
    let id = |v: i64, f: &str| {
        u32::try_from(v)
            .map_err(|_| format!("securityContext.{f}: must be between 0 and 4294967295, got {v}"))
    };
    let psc = pod.spec.security_context.clone().unwrap_or_default();
    let mut out = Security {
        seccomp_unconfined: sc.seccomp_unconfined(),
        privileged: sc.is_privileged(),
        run_as_non_root: sc.run_as_non_root == Some(true),
        read_only_rootfs: sc.read_only_root_filesystem == Some(true),
        fs_group: psc.fs_group.map(|g| id(g, "fsGroup")).transpose()?,
        supplemental_groups: psc
            .supplemental_groups
            .iter()
            .map(|g| id(*g, "supplementalGroups"))
            .collect::<Result<_, _>>()?,
        ..Security::default()
    };
    if let Some(caps) = &sc.capabilities {
        for (list, names, into) in [
            ("add", &caps.add, &mut out.cap_add),
            ("drop", &caps.drop, &mut out.cap_drop),
        ] {
            for (i, n) in names.iter().enumerate() {
                let nums = capability_numbers(n).ok_or_else(|| {
                    format!(
                        "{}: unknown capability {n:?}",
                        field(&format!("capabilities.{list}[{i}]"))
                    )
                })?;
                into.extend(nums);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{
        EmptyDirVolume, EnvVar, HostPathVolume, ObjectMeta, PodSpec, Quantity, SecurityContext,
        Volume, VolumeMount,
    };

    #[test]
    fn pod_fields_map_to_the_runtime_spec() {
        let mut c = Container {
            name: "app".into(),
            image: "busybox".into(),
            command: vec!["sh".into()],
            args: vec!["-c".into(), "x".into()],
            env: vec![EnvVar {
                name: "A".into(),
                value: "1".into(),
                ..Default::default()
            }],
            working_dir: Some("/w".into()),
            volume_mounts: vec![
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    read_only: false,
                },
                VolumeMount {
                    name: "host".into(),
                    mount_path: "/h".into(),
                    read_only: false,
                },
            ],
            security_context: Some(Box::new(SecurityContext {
                run_as_user: Some(1000),
                run_as_group: None,
                seccomp_profile: Some(shoal_api::SeccompProfile {
                    kind: SeccompProfileType::Unconfined,
                    localhost_profile: None,
                }),
                capabilities: Some(shoal_api::Capabilities {
                    add: vec!["NET_ADMIN".into(), "cap_sys_time".into()],
                    drop: vec!["CAP_CHOWN".into()],
                }),
                ..Default::default()
            })),
            ..Container::default()
        };
        c.resources
            .limits
            .insert("memory".into(), Quantity::parse("32Mi").unwrap());
        c.resources
            .limits
            .insert("cpu".into(), Quantity::parse("500m").unwrap());
        c.resources
            .requests
            .insert("cpu".into(), Quantity::parse("250m").unwrap());
        c.resources
            .limits
            .insert("pids".into(), Quantity::parse("20").unwrap());
        let pod = Pod {
            metadata: ObjectMeta::named("default", "web"),
            spec: PodSpec {
                containers: vec![c.clone()],
                volumes: vec![
                    Volume {
                        name: "data".into(),
                        empty_dir: Some(EmptyDirVolume {}),
                        ..Default::default()
                    },
                    Volume {
                        name: "host".into(),
                        host_path: Some(HostPathVolume {
                            path: "/srv".into(),
                            read_only: true,
                        }),
                        ..Default::default()
                    },
                ],
                restart_policy: RestartPolicy::OnFailure,
                termination_grace_period_seconds: 3,
                ..PodSpec::default()
            },
            status: None,
        };
        let s = container_spec(
            &pod,
            &c,
            "id1",
            Duration::from_millis(500),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(s.id, "id1");
        assert_eq!(s.name, "app");
        assert_eq!(s.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(s.user.as_deref(), Some("1000"));
        assert_eq!(
            s.security,
            Security {
                seccomp_unconfined: true,
                cap_add: vec![12, 25],
                cap_drop: vec![0],
                ..Security::default()
            }
        );
        assert_eq!(s.resources.memory_bytes, Some(32 << 20));
        assert_eq!(s.resources.cpu_limit_millis, Some(500));
        assert_eq!(s.resources.cpu_request_millis, Some(250));
        assert_eq!(s.resources.pids, Some(20));
        assert_eq!(s.restart_policy, RtPolicy::OnFailure);
        assert_eq!(s.grace_period, Duration::from_secs(3));
        assert_eq!(s.backoff.initial, Duration::from_millis(500));
        assert_eq!(s.mounts[0].source, MountSource::EmptyDir("data".into()));
        assert_eq!(s.mounts[1].source, MountSource::HostPath("/srv".into()));
        assert!(s.mounts[1].read_only);
        let mut bad = c.clone();
        bad.volume_mounts[0].name = "nope".into();
        assert!(
            container_spec(&pod, &bad, "x", Duration::ZERO, &Default::default())
                .unwrap_err()
                .contains("\"nope\"")
        );
        let sb = sandbox_config(&pod, "p1");
        assert_eq!(sb.hostname.as_deref(), Some("web"));
    }

    #[test]
    fn container_security_context_overrides_the_pods() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sec", "namespace": "default"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                    "supplementalGroups": [4000, 5000], "runAsNonRoot": true,
                    "seccompProfile": {"type": "Unconfined"}},
                "containers": [
                    {"name": "plain", "image": "busybox"},
                    {"name": "own", "image": "busybox", "securityContext": {
                        "runAsUser": 2000, "runAsNonRoot": false,
                        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "seccompProfile": {"type": "RuntimeDefault"}}}
                ]
            }
        }))
        .unwrap();
        let spec = |i: usize| {
            container_spec(
                &pod,
                &pod.spec.containers[i],
                "id",
                Duration::ZERO,
                &Default::default(),
            )
            .unwrap()
        };
        let plain = spec(0);
        assert_eq!(plain.user.as_deref(), Some("1000:3000"));
        assert_eq!(
            plain.security,
            Security {
                seccomp_unconfined: true,
                run_as_non_root: true,
                read_only_rootfs: false,
                supplemental_groups: vec![4000, 5000],
                fs_group: Some(2000),
                ..Security::default()
            }
        );
        let own = spec(1);
        assert_eq!(
            own.user.as_deref(),
            Some("2000:3000"),
            "the pod's group stays"
        );
        assert_eq!(
            own.security,
            Security {
                seccomp_unconfined: false,
                run_as_non_root: false,
                read_only_rootfs: true,
                supplemental_groups: vec![4000, 5000],
                fs_group: Some(2000),
                ..Security::default()
            }
        );
        // Without any securityContext: the image's user, the runtime's defaults.
        let mut bare = pod.clone();
        bare.spec.security_context = None;
        let s = container_spec(
            &bare,
            &bare.spec.containers[0],
            "id",
            Duration::ZERO,
            &Default::default(),
        )
        .unwrap();
        assert_eq!((s.user, s.security), (None, Security::default()));
        // privileged reaches the runtime.
        let mut privileged = bare.clone();
        privileged.spec.containers[0].security_context = Some(Box::new(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }));
        let s = container_spec(
            &privileged,
            &privileged.spec.containers[0],
            "id",
            Duration::ZERO,
            &Default::default(),
        )
        .unwrap();
        assert!(s.security.privileged);
        assert_eq!(
            s.security.cap_mask(),
            shoal_runtime::caps::all_mask(shoal_runtime::caps::last_cap())
        );
    }
}
