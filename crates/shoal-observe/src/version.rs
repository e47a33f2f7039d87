//! The build's version, git commit and date, for `--version`, `shoalctl version` and
//! `shoal_build_info` (emitted by this crate's build.rs; `unknown` outside git).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The package version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("SHOAL_GIT_COMMIT");
/// The UTC date of the build, `YYYY-MM-DD`.
pub const BUILD_DATE: &str = env!("SHOAL_BUILD_DATE");
/// What `--version` prints after the binary's name: `0.1.0 (commit abc123, built 2026-12-05)`.
pub const LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SHOAL_GIT_COMMIT"),
    ", built ",
    env!("SHOAL_BUILD_DATE"),
    ")"
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
    build_date: String,
}

/// Registers `shoal_build_info{version,commit,build_date} 1`.
pub fn register(r: &mut Registry) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels {
        version: VERSION.into(),
        commit: COMMIT.into(),
        build_date: BUILD_DATE.into(),
    })
    .set(1);
    r.register(
        "build_info",
        "The binary's version, git commit and build date (always 1)",
        info,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_part() {
        assert!(LINE.starts_with(VERSION), "{LINE}");
        assert!(LINE.contains(COMMIT) && LINE.contains(BUILD_DATE), "{LINE}");
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert!(COMMIT == "unknown" || COMMIT.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
