//! Limits on what one image may unpack to: uncompressed layer bytes, entries
//! and entry path length, counted over all of an image's layers. They stop
//! decompression bombs early (the decompressed stream is counted as it is
//! read, so a gzip bomb is cut off at the limit, not after inflating it) and
//! sparse files whose declared size is over the limit (refused from their
//! header, before anything is written).

/// The flag that raises [`Limits::max_unpacked_bytes`] (controller and agent).
pub const FLAG_MAX_UNPACKED_BYTES: &str = "--image-max-unpacked-bytes";
/// The flag that raises [`Limits::max_entries`] (controller and agent).
pub const FLAG_MAX_ENTRIES: &str = "--image-max-entries";

/// Limits applied while unpacking one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed layer bytes (tar streams, headers included) per image.
    pub max_unpacked_bytes: u64,
    /// Tar entries per image.
    pub max_entries: u64,
    /// Bytes in one entry path (Linux's PATH_MAX).
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 1 << 30,
            max_entries: 500_000,
            max_path_len: 4096,
        }
    }
}

/// What one image has used of its [`Limits`] so far.
#[derive(Debug, Default)]
pub struct Budget {
    /// The limits.
    pub limits: Limits,
    /// Uncompressed bytes read so far.
    pub bytes: u64,
    /// Entries seen so far.
    pub entries: u64,
}

impl Budget {
    /// A fresh budget for one image.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            bytes: 0,
            entries: 0,
        }
    }
}
