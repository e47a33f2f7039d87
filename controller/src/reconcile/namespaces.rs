//! Namespaces: the built-in ones ([`shoal_api::namespace::BUILT_IN`]) always exist; a
//! namespace marked Terminating (by a delete through the API) has every object in it
//! deleted, and once nothing is left, itself.

use std::collections::BTreeMap;

use shoal_api::{Kind, Namespace, Object};

use super::action::{Action, revision};

/// Creates of the built-in namespaces missing from `namespaces`.
pub fn missing_built_ins(namespaces: &BTreeMap<String, Namespace>) -> Vec<Action> {
    shoal_api::namespace::BUILT_IN
        .iter()
        .filter(|n| !namespaces.contains_key(&shoal_api::key_for(Kind::Namespace, "", n)))
        .map(|n| Action::Create(Object::Namespace(Namespace::named(n))))
        .collect()
}

/// What to do for the Terminating namespace `ns` whose objects (store key, revision) are
/// `contents`: delete them all, or, when none is left, the namespace (at the revision it
/// had when it was read, so that a change since is re-planned).
pub fn terminate(ns: &Namespace, contents: &[(String, u64)]) -> Vec<Action> {
    if contents.is_empty() {
        return vec![Action::Delete {
            key: shoal_api::key_for(Kind::Namespace, "", &ns.metadata.name),
            revision: revision(&ns.metadata),
        }];
    }
    contents
        .iter()
        .map(|(key, rev)| Action::Delete {
            key: key.clone(),
            revision: *rev,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{NamespacePhase, NamespaceStatus};

    fn ns(name: &str, rv: u64, terminating: bool) -> Namespace {
        let mut n = Namespace::named(name);
        n.metadata.resource_version = Some(rv.to_string());
        if terminating {
            n.status = Some(NamespaceStatus {
                phase: NamespacePhase::Terminating,
            });
        }
        n
    }

    #[test]
    fn built_ins_are_created_when_missing() {
        let mut have = BTreeMap::new();
        let created: Vec<String> = missing_built_ins(&have).iter().map(Action::key).collect();
        assert_eq!(created, ["Namespace//default", "Namespace//shoal-system"]);
        have.insert("Namespace//default".to_string(), ns("default", 3, false));
        have.insert(
            "Namespace//shoal-system".to_string(),
            ns("shoal-system", 4, false),
        );
        assert!(missing_built_ins(&have).is_empty());
    }

    #[test]
    fn contents_go_first_then_the_namespace_at_its_revision() {
        let team = ns("team", 12, true);
        assert!(team.is_terminating());
        let contents = vec![
            ("Pod/team/a".to_string(), 5),
            ("Service/team/web".to_string(), 7),
        ];
        assert_eq!(
            terminate(&team, &contents),
            vec![
                Action::Delete {
                    key: "Pod/team/a".into(),
                    revision: 5
                },
                Action::Delete {
                    key: "Service/team/web".into(),
                    revision: 7
                },
            ]
        );
        assert_eq!(
            terminate(&team, &[]),
            vec![Action::Delete {
                key: "Namespace//team".into(),
                revision: 12
            }]
        );
    }
}
