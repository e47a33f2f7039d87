//! Who is on the other end of a connection: read from the subject of its certificate,
//! which only the cluster CA signs.
//!
//! | identity   | subject                                             | issued by                     |
//! |------------|-----------------------------------------------------|-------------------------------|
//! | controller | `CN=controller:ID, O=shoal:controllers`             | the first controller / a join |
//! | node       | `CN=node:NAME, O=shoal:nodes`                       | an agent's join (CSR)         |
//! | user       | `CN=NAME, O=shoal:ROLE[, OU=NAMESPACE]`             | `shoalctl config create-user` |
//!
//! The organisation decides the kind, so a user can never pass for a node or a controller:
//! user certificates are only issued with `O=shoal:admin|edit|view`.

use std::fmt;
use std::str::FromStr;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

const ORG_CONTROLLERS: &str = "shoal:controllers";
const ORG_NODES: &str = "shoal:nodes";

/// A role of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including membership, tokens, snapshots and host access.
    Admin,
    /// Read and write workloads (in its namespace when it has one).
    Edit,
    /// Read workloads (in its namespace when it has one), never Secrets.
    View,
}

impl Role {
    /// `admin`, `edit` or `view`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Edit => "edit",
            Role::View => "view",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Role, PkiError> {
        match s {
            "admin" => Ok(Role::Admin),
            "edit" => Ok(Role::Edit),
            "view" => Ok(Role::View),
            _ => Err(PkiError::Name {
                what: "role",
                name: s.to_string(),
                reason: "expected admin, edit or view".into(),
            }),
        }
    }
}

/// The identity a certificate proves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A controller (Raft member) by its id.
    Controller {
        /// Its `--id`.
        id: u64,
    },
    /// A node's agent by its node name.
    Node {
        /// The Node object's name.
        name: String,
    },
    /// A person or a program with a role.
    User {
        /// The user name.
        name: String,
        /// The role.
        role: Role,
        /// The only namespace it may use (`None`: every namespace).
        namespace: Option<String>,
    },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Controller { id } => write!(f, "controller {id}"),
            Identity::Node { name } => write!(f, "node {name}"),
            Identity::User {
                name,
                role,
                namespace: Some(ns),
            } => write!(f, "user {name} ({role} in namespace {ns})"),
            Identity::User { name, role, .. } => write!(f, "user {name} ({role})"),
        }
    }
}

/// Checks a name that goes into a certificate subject (node, user, namespace): a DNS
/// label-like string, 1–63 characters of `a-z 0-9 - .`, starting and ending alphanumeric.
pub fn check_name(what: &'static str, name: &str) -> Result<(), PkiError> {
    let bad = |reason: &str| PkiError::Name {
        what,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(bad("may only contain a-z, 0-9, '-' and '.'"));
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(bad("must start and end with a letter or digit"));
    }
    Ok(())
}

impl Identity {
    /// The subject fields: common name, organisation, organisational unit.
    pub fn subject(&self) -> (String, String, Option<String>) {
        match self {
            Identity::Controller { id } => (
                format!("controller:{id}"),
                ORG_CONTROLLERS.to_string(),
                None,
            ),
            Identity::Node { name } => (format!("node:{name}"), ORG_NODES.to_string(), None),
            Identity::User {
                name,
                role,
                namespace,
            } => (name.clone(), format!("shoal:{role}"), namespace.clone()),
        }
    }

    /// Checks the names in the identity (see [`check_name`]).
    pub fn check(&self) -> Result<(), PkiError> {
        match self {
            Identity::Controller { id: 0 } => Err(PkiError::Name {
                what: "controller id",
                name: "0".into(),
                reason: "must be a positive integer".into(),
            }),
            Identity::Controller { .. } => Ok(()),
            Identity::Node { name } => check_name("node name", name),
            Identity::User {
                name, namespace, ..
            } => {
                check_name("user name", name)?;
                if let Some(ns) = namespace {
                    check_name("namespace", ns)?;
                }
                Ok(())
            }
        }
    }

    /// Reads the identity from a subject.
    pub fn from_subject(cn: &str, org: &str, ou: Option<&str>) -> Result<Identity, PkiError> {
        let bad = |m: &str| PkiError::cert(format!("certificate subject CN={cn}, O={org}"), m);
        let id = match org {
            ORG_CONTROLLERS => {
                let id = cn
                    .strip_prefix("controller:")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| bad("expected CN=controller:ID"))?;
                Identity::Controller { id }
            }
            ORG_NODES => {
                let name = cn
                    .strip_prefix("node:")
                    .ok_or_else(|| bad("expected CN=node:NAME"))?;
                Identity::Node {
                    name: name.to_string(),
                }
            }
            o => {
                let role = o
                    .strip_prefix("shoal:")
                    .and_then(|r| r.parse::<Role>().ok())
                    .ok_or_else(|| bad("unknown organisation; not a Shoal identity"))?;
                Identity::User {
                    name: cn.to_string(),
                    role,
                    namespace: ou.map(str::to_string),
                }
            }
        };
        id.check()?;
        Ok(id)
    }

    /// Reads the identity of a certificate (DER). Does not verify it: the TLS layer did.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, PkiError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| PkiError::cert("peer certificate", e))?;
        let subject = cert.subject();
        let first = |it: &mut dyn Iterator<
            Item = &x509_parser::x509::AttributeTypeAndValue<'_>,
        >| { it.next().and_then(|a| a.as_str().ok()).map(str::to_string) };
        let cn = first(&mut subject.iter_common_name()).unwrap_or_default();
        let org = first(&mut subject.iter_organization()).unwrap_or_default();
        let ou = first(&mut subject.iter_organizational_unit());
        Identity::from_subject(&cn, &org, ou.as_deref())
    }

    /// True for a controller.
    pub fn is_controller(&self) -> bool {
        matches!(self, Identity::Controller { .. })
    }

    /// True for an admin user or a controller.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Identity::Controller { .. }
                | Identity::User {
                    role: Role::Admin,
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        for id in [
            Identity::Controller { id: 3 },
            Identity::Node { name: "n1".into() },
            Identity::User {
                name: "alice".into(),
                role: Role::Edit,
                namespace: Some("team".into()),
            },
            Identity::User {
                name: "root".into(),
                role: Role::Admin,
                namespace: None,
            },
        ] {
            let (cn, o, ou) = id.subject();
            assert_eq!(Identity::from_subject(&cn, &o, ou.as_deref()).unwrap(), id);
        }
    }

    #[test]
    fn foreign_or_malformed_subjects_are_refused() {
        for (cn, o) in [
            ("x", "acme"),
            ("node:", ORG_NODES),
            ("controller:x", ORG_CONTROLLERS),
            ("n1", ORG_NODES),
            ("alice", "shoal:root"),
            ("Alice!", "shoal:view"),
        ] {
            assert!(Identity::from_subject(cn, o, None).is_err(), "{cn} {o}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("user name", "alice-2.dev").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"x".repeat(64)] {
            assert!(check_name("user name", bad).is_err(), "{bad}");
        }
    }
}
