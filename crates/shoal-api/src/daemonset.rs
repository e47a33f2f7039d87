//! DaemonSet (`apps/v1`): one pod from a template on every node that matches its
//! `nodeSelector` and whose taints it tolerates, updated by rolling or on delete.

use crate::deployment::{PodTemplateSpec, non_negative, validate_selector_and_template};
use crate::intorstring::IntOrString;
use crate::meta::ObjectMeta;
use crate::pod::RestartPolicy;
use crate::selector::{LabelSelector, LabelSelectorSpec, SelectorError};
use crate::validation::{self as v, ValidationErrors};
use serde::{Deserialize, Serialize};

/// Label every pod of a DaemonSet carries: the [`crate::template_hash`] of the template
/// it was made from (Kubernetes' name for it).
pub const DAEMONSET_HASH_LABEL: &str = "controller-revision-hash";

/// A daemon set: `metadata`, desired `spec`, observed `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonSet {
    /// Name, namespace, labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Selector, pod template and update strategy.
    pub spec: DaemonSetSpec,
    /// Observed pod counts (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DaemonSetStatus>,
}

/// Desired state of a daemon set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonSetSpec {
    /// Which pods belong to the daemon set; must match the template's labels.
    pub selector: LabelSelectorSpec,
    /// The pod to run on every eligible node (`nodeSelector` and `tolerations` choose the
    /// nodes; `restartPolicy` must be `Always`).
    pub template: PodTemplateSpec,
    /// How pods are replaced when the template changes (default RollingUpdate, maxUnavailable 1).
    #[serde(default)]
    pub update_strategy: DaemonSetUpdateStrategy,
}

/// How a daemon set replaces pods of an old template.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum DaemonSetUpdateStrategyType {
    /// Delete old pods, at most `maxUnavailable` at a time, and start new ones in their
    /// place (the default).
    #[default]
    RollingUpdate,
    /// Start a pod of the new template only where the old pod was deleted by hand.
    OnDelete,
}

fn one() -> IntOrString {
    IntOrString::Int(1)
}

/// Limits of a daemon set's rolling update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdateDaemonSet {
    /// Nodes whose daemon pod may be unavailable during the update: a count or a
    /// percentage of the eligible nodes (rounded up), default 1, never 0.
    #[serde(default = "one")]
    pub max_unavailable: IntOrString,
}

impl Default for RollingUpdateDaemonSet {
    fn default() -> Self {
        RollingUpdateDaemonSet {
            max_unavailable: one(),
        }
    }
}

/// `spec.updateStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonSetUpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(default, rename = "type")]
    pub type_: DaemonSetUpdateStrategyType,
    /// Limits for `RollingUpdate` (defaults apply when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDaemonSet>,
}

impl DaemonSetUpdateStrategy {
    /// maxUnavailable resolved against `desired` nodes, as Kubernetes does: a percentage
    /// rounds up, and the result is at least 1.
    pub fn resolved_max_unavailable(&self, desired: i32) -> i32 {
        let ru = self.rolling_update.clone().unwrap_or_default();
        ru.max_unavailable
            .resolve(desired, true)
            .unwrap_or(1)
            .max(1)
    }
}

/// Observed state of a daemon set (Kubernetes' fields and meanings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonSetStatus {
    /// Nodes that should run the daemon pod.
    #[serde(default, deserialize_with = "non_negative")]
    pub desired_number_scheduled: i32,
    /// Nodes that should run the daemon pod and run at least one.
    #[serde(default, deserialize_with = "non_negative")]
    pub current_number_scheduled: i32,
    /// Nodes that run the daemon pod but should not.
    #[serde(default, deserialize_with = "non_negative")]
    pub number_misscheduled: i32,
    /// Nodes that should run the daemon pod and have one Ready.
    #[serde(default, deserialize_with = "non_negative")]
    pub number_ready: i32,
    /// Nodes that run a pod of the current template.
    #[serde(default, deserialize_with = "non_negative")]
    pub updated_number_scheduled: i32,
    /// Nodes that should run the daemon pod and have one available (Ready).
    #[serde(default, deserialize_with = "non_negative")]
    pub number_available: i32,
    /// Nodes that should run the daemon pod and have none available.
    #[serde(default, deserialize_with = "non_negative")]
    pub number_unavailable: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl DaemonSet {
    /// The selector as a [`LabelSelector`].
    pub fn selector(&self) -> Result<LabelSelector, SelectorError> {
        LabelSelector::from_spec(&self.spec.selector)
    }

    /// Checks metadata, selector (non-empty, matching the template's labels), template
    /// (`restartPolicy: Always`, no `nodeName`, no [`DAEMONSET_HASH_LABEL`]) and update
    /// strategy (maxUnavailable a positive count or a percentage in 1%..=100%).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        self.metadata.validate(
            crate::Kind::DaemonSet,
            v::check_dns1123_subdomain,
            &mut errs,
        );
        let spec = &self.spec;
        validate_selector_and_template(&spec.selector, &spec.template, &mut errs);
        if spec.template.spec.restart_policy != RestartPolicy::Always {
            errs.push(
                "spec.template.spec.restartPolicy",
                format!(
                    "must be Always for a DaemonSet, got {:?}",
                    spec.template.spec.restart_policy
                ),
            );
        }
        if spec
            .template
            .metadata
            .labels
            .contains_key(DAEMONSET_HASH_LABEL)
        {
            errs.push(
                "spec.template.metadata.labels",
                format!("must not set {DAEMONSET_HASH_LABEL:?}: the controller sets it"),
            );
        }
        if let Some(ru) = &spec.update_strategy.rolling_update {
            let field = "spec.updateStrategy.rollingUpdate.maxUnavailable";
            if spec.update_strategy.type_ == DaemonSetUpdateStrategyType::OnDelete {
                errs.push(
                    "spec.updateStrategy.rollingUpdate",
                    "must not be set when type is OnDelete",
                );
            }
            match ru.max_unavailable.check_count_or_percent() {
                Err(e) => errs.push(field, e),
                Ok(()) => match &ru.max_unavailable {
                    IntOrString::Int(0) => errs.push(
                        field,
                        "must be at least 1 (or a percentage such as \"10%\"), got 0",
                    ),
                    IntOrString::Int(_) => {}
                    IntOrString::String(s) => {
                        if let Some(Ok(p)) = s.strip_suffix('%').map(|n| n.parse::<i64>())
                            && !(1..=100).contains(&p)
                        {
                            errs.push(
                                field,
                                format!("must be a percentage from 1% to 100%, got {s:?}"),
                            );
                        }
                    }
                },
            }
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Object, parse_manifests};

    const DS: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {disk: ssd}
      tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]
      containers: [{name: c, image: busybox}]
";

    fn error(text: &str) -> String {
        parse_manifests("ds.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn parses_with_upstream_api_version_and_defaults() {
        let objs = parse_manifests("ds.yaml", DS).unwrap();
        let Object::DaemonSet(d) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(
            d.spec.update_strategy.type_,
            DaemonSetUpdateStrategyType::RollingUpdate
        );
        assert_eq!(d.spec.update_strategy.resolved_max_unavailable(10), 1);
        assert_eq!(d.spec.template.spec.node_selector["disk"], "ssd");
        assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
        d.validate().unwrap();
    }

    #[test]
    fn selector_must_match_template_labels_naming_the_field() {
        let e = error(&DS.replace("labels: {app: agent}", "labels: {app: other}"));
        assert!(
            e.contains(
                "spec.template.metadata.labels: selector \"app=agent\" does not match the template labels"
            ),
            "{e}"
        );
        let e = error(&DS.replace("selector: {matchLabels: {app: agent}}", "selector: {}"));
        assert!(e.contains("spec.selector: must not be empty"), "{e}");
        let e = error(&DS.replace("  selector: {matchLabels: {app: agent}}\n", ""));
        assert!(
            e.contains("spec.selector: required field is missing"),
            "{e}"
        );
    }

    #[test]
    fn template_rules() {
        let e = error(&DS.replace(
            "      nodeSelector",
            "      restartPolicy: Never\n      nodeSelector",
        ));
        assert!(
            e.contains("spec.template.spec.restartPolicy: must be Always for a DaemonSet"),
            "{e}"
        );
        let e = error(&DS.replace(
            "      nodeSelector",
            "      nodeName: n1\n      nodeSelector",
        ));
        assert!(
            e.contains("spec.template.spec.nodeName: must not be set in a template"),
            "{e}"
        );
        let e = error(&DS.replace(
            "labels: {app: agent}",
            "labels: {app: agent, controller-revision-hash: x}",
        ));
        assert!(
            e.contains("must not set \"controller-revision-hash\""),
            "{e}"
        );
    }

    #[test]
    fn update_strategy_rules() {
        let with = |s: &str| {
            DS.replace(
                "  template:\n",
                &format!("  updateStrategy: {s}\n  template:\n"),
            )
        };
        let d = |s: &str| -> DaemonSet {
            let Object::DaemonSet(d) = parse_manifests("ds.yaml", &with(s)).unwrap().remove(0)
            else {
                panic!()
            };
            d
        };
        let pct = d("{type: RollingUpdate, rollingUpdate: {maxUnavailable: \"25%\"}}");
        assert_eq!(pct.spec.update_strategy.resolved_max_unavailable(10), 3);
        assert_eq!(pct.spec.update_strategy.resolved_max_unavailable(1), 1);
        assert_eq!(pct.spec.update_strategy.resolved_max_unavailable(0), 1);
        let two = d("{rollingUpdate: {maxUnavailable: 2}}");
        assert_eq!(two.spec.update_strategy.resolved_max_unavailable(10), 2);
        let od = d("{type: OnDelete}");
        assert_eq!(
            od.spec.update_strategy.type_,
            DaemonSetUpdateStrategyType::OnDelete
        );
        for (bad, want) in [
            (
                "{rollingUpdate: {maxUnavailable: 0}}",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: must be at least 1",
            ),
            (
                "{rollingUpdate: {maxUnavailable: \"0%\"}}",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: must be a percentage from 1% to 100%",
            ),
            (
                "{rollingUpdate: {maxUnavailable: \"150%\"}}",
                "must be a percentage from 1% to 100%, got \"150%\"",
            ),
            (
                "{rollingUpdate: {maxUnavailable: lots}}",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: expected a non-negative integer or a percentage",
            ),
            (
                "{type: OnDelete, rollingUpdate: {maxUnavailable: 1}}",
                "spec.updateStrategy.rollingUpdate: must not be set when type is OnDelete",
            ),
            (
                "{type: Sometimes}",
                "spec.updateStrategy.type: expected one of RollingUpdate, OnDelete, got \"Sometimes\"",
            ),
        ] {
            let e = error(&with(bad));
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
