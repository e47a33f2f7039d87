//! Where the binaries under test are.

use std::path::{Path, PathBuf};

/// The workspace root (for `deploy/`, `examples/`, `scripts/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The directory of the binaries under test: `$SHOAL_BIN_DIR` (or the older
/// `$SHOAL_E2E_BIN_DIR`; e.g. a release build), else the target directory of the running
/// test binary (`target/debug/deps/it-…` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) =
        std::env::var_os("SHOAL_BIN_DIR").or_else(|| std::env::var_os("SHOAL_E2E_BIN_DIR"))
    {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The binary `name` (`shoal-controller`, `shoal-agent`, `shoalctl`): `$SHOAL_<ROLE>_BIN`
/// (`SHOAL_CONTROLLER_BIN`, `SHOAL_AGENT_BIN`, `SHOAL_CTL_BIN`) when set, else
/// [`bin_dir`]`/name`.
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn bin(name: &str) -> PathBuf {
    let role = name
        .trim_start_matches("shoal-")
        .trim_start_matches("shoal");
    let var = format!("SHOAL_{}_BIN", role.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p {name}` (same target directory), or set {var} or SHOAL_BIN_DIR",
        p.display()
    );
    p
}
