//! StatefulSet (`apps/v1`): pods with stable names (`web-0`, `web-1`, …), stable DNS
//! names through a headless Service (`web-0.web.NS.svc.shoal.local`) and one
//! PersistentVolumeClaim per pod and claim template (`www-web-0`), started in order and
//! stopped from the highest ordinal.

use crate::deployment::{PodTemplateSpec, non_negative, validate_selector_and_template};
use crate::meta::ObjectMeta;
use crate::persistentvolumeclaim::PersistentVolumeClaimSpec;
use crate::pod::{PersistentVolumeClaimVolumeSource, RestartPolicy, Volume};
use crate::selector::{LabelSelector, LabelSelectorSpec, SelectorError};
use crate::validation::{self as v, ValidationErrors, index, join};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Label every pod of a StatefulSet carries: its own name (Kubernetes' name for it).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// Label every pod of a StatefulSet carries: its ordinal (Kubernetes' name for it).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

fn default_replicas() -> i32 {
    1
}

/// A stateful set: `metadata`, desired `spec`, observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSet {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Replicas, selector, template, service, claim templates, policies.
    pub spec: StatefulSetSpec,
    /// Observed pod counts (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatefulSetStatus>,
}

/// How pods are started and stopped.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum PodManagementPolicy {
    /// One at a time: pod N+1 is made only when pods 0..=N are Running and Ready;
    /// scaling down removes the highest ordinal first, one at a time (the default).
    #[default]
    OrderedReady,
    /// All at once, in both directions.
    Parallel,
}

/// How pods of an old template are replaced.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum StatefulSetUpdateStrategyType {
    /// Delete and remake pods one at a time from the highest ordinal down, each after the
    /// others are Ready (the default).
    #[default]
    RollingUpdate,
    /// Make a pod of the new template only where the old one was deleted by hand.
    OnDelete,
}

/// `spec.updateStrategy.rollingUpdate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdateStatefulSetStrategy {
    /// Pods with an ordinal below this keep their template (default 0: all are updated).
    #[serde(default, deserialize_with = "non_negative")]
    pub partition: i32,
}

/// `spec.updateStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSetUpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(default, rename = "type")]
    pub type_: StatefulSetUpdateStrategyType,
    /// `partition` for `RollingUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateStatefulSetStrategy>,
}

/// Metadata of a claim template: a name and labels/annotations for the claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimTemplateMeta {
    /// The template's name: the pods' volume name, and the claims' name prefix
    /// (`NAME-STS-ORDINAL`).
    pub name: String,
    /// Labels every claim gets (plus the selector's `matchLabels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations every claim gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One of `spec.volumeClaimTemplates`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimTemplate {
    /// Name, labels, annotations.
    pub metadata: ClaimTemplateMeta,
    /// The claims' spec.
    pub spec: PersistentVolumeClaimSpec,
}

/// Desired state of a stateful set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSetSpec {
    /// Number of pods (default 1): ordinals `0..replicas`.
    #[serde(default = "default_replicas", deserialize_with = "non_negative")]
    pub replicas: i32,
    /// Which pods belong to the set; must match the template's labels.
    pub selector: LabelSelectorSpec,
    /// The pods to make (`restartPolicy` must be `Always`).
    pub template: PodTemplateSpec,
    /// The headless Service giving the pods their DNS names: each pod gets
    /// `hostname: NAME-ORDINAL` and `subdomain: serviceName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// One claim per pod and template, mounted as the volume of the template's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,
    /// `OrderedReady` (default) or `Parallel`.
    #[serde(default)]
    pub pod_management_policy: PodManagementPolicy,
    /// How pods are replaced when the template changes.
    #[serde(default)]
    pub update_strategy: StatefulSetUpdateStrategy,
    /// Seconds a pod must have been Ready to count as available (default 0); with
    /// `OrderedReady` the next pod waits for the previous one to be available.
    #[serde(default, deserialize_with = "non_negative")]
    pub min_ready_seconds: i32,
}

/// Observed state of a stateful set (Kubernetes' fields and meanings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSetStatus {
    /// Pods that exist.
    #[serde(default, deserialize_with = "non_negative")]
    pub replicas: i32,
    /// Pods that are Ready.
    #[serde(default, deserialize_with = "non_negative")]
    pub ready_replicas: i32,
    /// Pods of the current revision.
    #[serde(default, deserialize_with = "non_negative")]
    pub current_replicas: i32,
    /// Pods of the update revision.
    #[serde(default, deserialize_with = "non_negative")]
    pub updated_replicas: i32,
    /// Pods that have been Ready for `minReadySeconds`.
    #[serde(default, deserialize_with = "non_negative")]
    pub available_replicas: i32,
    /// The revision the pods ran before the update under way (`NAME-HASH`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_revision: String,
    /// The revision of the current template (`NAME-HASH`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_revision: String,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl StatefulSet {
    /// The selector as a [`LabelSelector`].
    pub fn selector(&self) -> Result<LabelSelector, SelectorError> {
        LabelSelector::from_spec(&self.spec.selector)
    }

    /// The name of the pod with `ordinal`: `NAME-ORDINAL`.
    pub fn pod_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.metadata.name)
    }

    /// The ordinal of a pod named `NAME-ORDINAL`, if `pod` is such a name.
    pub fn ordinal_of(&self, pod: &str) -> Option<i32> {
        let rest = pod
            .strip_prefix(self.metadata.name.as_str())?
            .strip_prefix('-')?;
        if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
            return None;
        }
        rest.parse().ok().filter(|n: &i32| *n >= 0)
    }

    /// The name of the claim of template `template` for `ordinal`:
    /// `TEMPLATE-NAME-ORDINAL`, as Kubernetes names it.
    pub fn claim_name(&self, template: &str, ordinal: i32) -> String {
        format!("{template}-{}", self.pod_name(ordinal))
    }

    /// The pod template with one `persistentVolumeClaim` volume per claim template
    /// (named as the template, claim `claim_name(template, ordinal)`), replacing a
    /// template volume of the same name as Kubernetes does.
    pub fn template_with_claims(&self, ordinal: i32) -> PodTemplateSpec {
        let mut t = self.spec.template.clone();
        for c in &self.spec.volume_claim_templates {
            t.spec.volumes.retain(|v| v.name != c.metadata.name);
            t.spec.volumes.push(Volume {
                name: c.metadata.name.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: self.claim_name(&c.metadata.name, ordinal),
                    read_only: false,
                }),
                ..Volume::default()
            });
        }
        t
    }

    /// Checks metadata, selector, template (with the claim volumes), service name and
    /// claim templates.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata
            .validate(crate::Kind::StatefulSet, v::check_dns1123_label, &mut errs);
        let spec = &self.spec;
        validate_selector_and_template(&spec.selector, &self.template_with_claims(0), &mut errs);
        if spec.template.spec.restart_policy != RestartPolicy::Always {
            errs.push(
                "spec.template.spec.restartPolicy",
                format!(
                    "must be Always for a StatefulSet, got {:?}",
                    spec.template.spec.restart_policy
                ),
            );
        }
        for l in [crate::DAEMONSET_HASH_LABEL, POD_NAME_LABEL, POD_INDEX_LABEL] {
            if spec.template.metadata.labels.contains_key(l) {
                errs.push(
                    "spec.template.metadata.labels",
                    format!("must not set {l:?}: the controller sets it"),
                );
            }
        }
        if spec.template.spec.hostname.is_some() || spec.template.spec.subdomain.is_some() {
            errs.push(
                "spec.template.spec",
                "hostname and subdomain must not be set: every pod gets hostname NAME-ORDINAL and subdomain spec.serviceName",
            );
        }
        if !spec.service_name.is_empty() {
            errs.check(
                "spec.serviceName",
                v::check_dns1035_label(&spec.service_name),
            );
        }
        let mut names = BTreeSet::new();
        for (i, c) in spec.volume_claim_templates.iter().enumerate() {
            let p = index("spec.volumeClaimTemplates", i);
            errs.check(
                join(&p, "metadata.name"),
                v::check_dns1123_label(&c.metadata.name),
            );
            if !names.insert(c.metadata.name.as_str()) {
                errs.push(
                    join(&p, "metadata.name"),
                    format!("duplicate claim template {:?}", c.metadata.name),
                );
            }
            v::validate_labels(&c.metadata.labels, &join(&p, "metadata.labels"), &mut errs);
            if c.spec.volume_name.is_some() {
                errs.push(
                    join(&p, "spec.volumeName"),
                    "must not be set in a template: each claim gets its own volume",
                );
            }
            c.spec.validate(&join(&p, "spec"), &mut errs);
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const STS: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox
        volumeMounts: [{name: www, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
";

    fn parse(text: &str) -> StatefulSet {
        let Object::StatefulSet(s) = parse_manifests("sts.yaml", text).unwrap().remove(0) else {
            panic!()
        };
        s
    }

    fn error(text: &str) -> String {
        parse_manifests("sts.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn names_ordinals_and_claims() {
        let s = parse(STS);
        assert_eq!(s.pod_name(1), "web-1");
        assert_eq!(s.ordinal_of("web-12"), Some(12));
        assert_eq!(s.ordinal_of("web-01"), None);
        assert_eq!(s.ordinal_of("web-x"), None);
        assert_eq!(s.ordinal_of("webby-1"), None);
        assert_eq!(s.ordinal_of("web-"), None);
        assert_eq!(s.claim_name("www", 0), "www-web-0");
        let t = s.template_with_claims(3);
        let claim = t.spec.volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "www-web-3");
        assert_eq!(
            s.spec.pod_management_policy,
            PodManagementPolicy::OrderedReady
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = error(&STS.replace(
            "mountPath: /data}",
            "mountPath: /data}, {name: nope, mountPath: /x}",
        ));
        assert!(
            e.contains("volumeMounts[1].name: no volume named \"nope\""),
            "{e}"
        );
        let e = error(&format!("{STS}      storageClassName: fast\n"));
        assert!(
            e.contains(
                "spec.volumeClaimTemplates[0].spec.storageClassName: storage class \"fast\""
            ),
            "{e}"
        );
        let e = error(&STS.replace(
            "      containers:",
            "      restartPolicy: Never\n      containers:",
        ));
        assert!(e.contains("must be Always for a StatefulSet"), "{e}");
        let e = error(&STS.replace("serviceName: web", "serviceName: Web_1"));
        assert!(e.contains("spec.serviceName"), "{e}");
        let e = error(&STS.replace(
            "  serviceName: web\n",
            "  serviceName: web\n  revisionHistoryLimit: 3\n",
        ));
        assert!(
            e.contains("spec.revisionHistoryLimit") && e.contains("not supported by Shoal"),
            "{e}"
        );
        let e = error(&STS.replace(
            "- metadata: {name: www}",
            "- metadata: {name: www}\n    spec: {}\n  - metadata: {name: www}",
        ));
        assert!(e.contains("duplicate claim template"), "{e}");
    }
}
