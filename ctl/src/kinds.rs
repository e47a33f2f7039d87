//! Resolves what the user typed (`pods`, `po`, `deploy`, `svc/web`) to a resource kind,
//! through shoal-api's [`Kind`] (which owns the kubectl aliases).

use std::str::FromStr;

use shoal_api::Kind;

use crate::error::CtlError;

/// A resource kind as the command line needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind as in objects' `kind` field, e.g. `Deployment` (also sent on the wire).
    pub kind: &'static str,
    /// Lower-case singular, e.g. `deployment` (used in `deployment/web`).
    pub singular: &'static str,
    /// Lower-case plural, e.g. `deployments`.
    pub plural: &'static str,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
}

impl KindInfo {
    /// The `kind/name` form printed by apply, create, label and `-o name`.
    pub fn slash_name(&self, name: &str) -> String {
        format!("{}/{}", self.singular, name)
    }
}

/// The command-line view of a shoal-api kind.
pub fn of_kind(kind: Kind) -> KindInfo {
    let singular = match kind {
        Kind::Pod => "pod",
        Kind::Deployment => "deployment",
        Kind::DaemonSet => "daemonset",
        Kind::StatefulSet => "statefulset",
        Kind::Service => "service",
        Kind::Node => "node",
        Kind::Event => "event",
        Kind::Namespace => "namespace",
        Kind::Endpoints => "endpoints",
        Kind::Job => "job",
        Kind::CronJob => "cronjob",
        Kind::ConfigMap => "configmap",
        Kind::Secret => "secret",
        Kind::PersistentVolumeClaim => "persistentvolumeclaim",
        Kind::PersistentVolume => "persistentvolume",
        Kind::NetworkPolicy => "networkpolicy",
    };
    KindInfo {
        kind: kind.as_str(),
        singular,
        plural: kind.plural(),
        namespaced: kind.namespaced(),
    }
}

/// Resolves a kind name, plural or alias (case-insensitive).
pub fn resolve(text: &str) -> Result<KindInfo, CtlError> {
    Kind::from_str(text.trim())
        .map(of_kind)
        .map_err(|e| CtlError::Usage(e.to_string()))
}

/// Splits `KIND/NAME` into its parts; a plain `KIND` gives no name.
pub fn split_kind_name(text: &str) -> Result<(KindInfo, Option<String>), CtlError> {
    match text.split_once('/') {
        Some((k, n)) if !n.is_empty() && !n.contains('/') => Ok((resolve(k)?, Some(n.to_string()))),
        Some(_) => Err(CtlError::Usage(format!(
            "{text:?}: expected TYPE/NAME, e.g. pod/web-1"
        ))),
        None => Ok((resolve(text)?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_plurals_resolve() {
        for (input, kind) in [
            ("pods", "Pod"),
            ("po", "Pod"),
            ("Pod", "Pod"),
            ("deploy", "Deployment"),
            ("deployments", "Deployment"),
            ("svc", "Service"),
            ("nodes", "Node"),
            ("ev", "Event"),
            ("ns", "Namespace"),
            ("ep", "Endpoints"),
            ("jobs", "Job"),
            ("cj", "CronJob"),
            ("cronjobs", "CronJob"),
        ] {
            assert_eq!(resolve(input).unwrap().kind, kind, "{input}");
        }
        let e = resolve("widgets").unwrap_err().to_string();
        assert!(e.contains("\"widgets\""), "{e}");
        for k in Kind::ALL {
            let info = of_kind(k);
            assert_eq!(info.singular, k.as_str().to_lowercase());
            assert_eq!(resolve(info.singular).unwrap(), info);
        }
    }

    #[test]
    fn kind_slash_name() {
        let (k, n) = split_kind_name("svc/web").unwrap();
        assert_eq!((k.kind, n.as_deref()), ("Service", Some("web")));
        let (k, n) = split_kind_name("pods").unwrap();
        assert_eq!((k.kind, n), ("Pod", None));
        assert!(split_kind_name("pod/").is_err());
        assert!(split_kind_name("pod/a/b").is_err());
        assert_eq!(k.slash_name("web-1"), "pod/web-1");
    }
}
