//! Pure placement logic: (pending pods, nodes, pods already bound) -> bindings.
//!
//! This crate owns the scheduler's decision: which node each pending pod goes
//! to, or why it fits nowhere. It performs no I/O and must never depend on the
//! store, the network, the runtime or on `shoal-api`: it speaks its own plain
//! input types ([`NodeInfo`], [`PodRequest`], [`BoundPod`]) which the
//! controller converts from API objects, and answers with a [`SchedulePlan`]
//! the controller writes in one batch.
//!
//! The algorithm is the usual filter-then-score:
//!
//! * **filters** — node Ready and not cordoned, `nodeSelector`, taints
//!   (`NoSchedule` and `NoExecute` must be tolerated), resources fit
//!   (requests against allocatable minus what is bound, including pods bound
//!   earlier in the same call), host ports free;
//! * **scores** — least allocated (cpu and memory), spread of pods with the
//!   same owner, untolerated `PreferNoSchedule` taints; ties go to the node
//!   whose name sorts first.
#![warn(missing_docs)]

mod fit;
mod node;
mod plan;
mod pod;
mod resources;
mod schedule;

pub use fit::{FitError, FitReason};
pub use node::{NodeInfo, Protocol, Taint, TaintEffect};
pub use plan::{Binding, SchedulePlan};
pub use pod::{BoundPod, PodRequest, Toleration, TolerationOperator};
pub use resources::Resources;
pub use schedule::{schedule, static_rejection};
