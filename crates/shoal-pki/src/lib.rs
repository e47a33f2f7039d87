//! Shoal's access control primitives: the cluster CA and certificates ([`ca`]), the
//! identities certificates prove ([`identity`]), join tokens ([`token`]), the PKI files
//! of a process ([`files`]), the mutual-TLS transport every gRPC connection uses
//! ([`tls`]) and the authorization layer in front of every gRPC server ([`layer`]).
//! Pure where it can be (certificates, identities, tokens); the I/O is the TLS
//! transport and the files. See docs/security.md for the model.
#![warn(missing_docs)]

pub mod ca;
pub mod error;
pub mod files;
pub mod identity;
pub mod layer;
pub mod tls;
pub mod token;

pub use ca::{Ca, CertInfo};
pub use error::PkiError;
pub use identity::{Identity, Role};
pub use token::Token;
