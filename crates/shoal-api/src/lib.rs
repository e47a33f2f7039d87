//! Shoal's resource model: Pod, Deployment, Service, Node, Event; multi-document
//! YAML manifests; validation; label selectors; quantities. Pure: no I/O, and it
//! must never depend on another crate of ours.
#![warn(missing_docs)]
