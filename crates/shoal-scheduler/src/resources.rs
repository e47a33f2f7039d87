//! Quantities of schedulable resources.

/// Amounts of the resources the scheduler accounts for.
///
/// Used both for a node's allocatable capacity and for a pod's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in thousandths of a core (`500` = half a core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Number of pods (a pod's own request always counts as at least one).
    pub pods: u64,
}

impl Resources {
    /// A node's or pod's resources from cpu millicores, memory bytes and a pod count.
    pub fn new(cpu_millis: u64, memory_bytes: u64, pods: u64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
            pods,
        }
    }

    /// A single pod's requests: the given cpu and memory, and one pod slot.
    pub fn pod(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self::new(cpu_millis, memory_bytes, 1)
    }
}
