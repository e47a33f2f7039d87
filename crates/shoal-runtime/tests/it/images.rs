//! Image import of real busybox images.
