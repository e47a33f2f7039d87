//! Manifests from the Kubernetes documentation that use ConfigMaps, init containers,
//! Jobs, a StatefulSet with a headless Service, securityContext, lifecycle hooks and probe
//! headers (`ctl/tests/fixtures/upstream/`, kept unchanged but for what a file's first
//! lines say) pass `apply --dry-run=server`,
//! writing nothing; then a real apply of each creates what it lists.

use crate::harness::{Controller, workspace};

#[test]
fn upstream_manifests_pass_server_dry_run_unchanged() {
    let c = Controller::start();
    let dir = workspace().join("ctl/tests/fixtures/upstream");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "{files:?}");
    for f in &files {
        let path = f.to_str().expect("utf-8");
        let out = c.ctl(&["apply", "--dry-run=server", "-f", path]).ok();
        assert!(
            out.lines().all(|l| l.ends_with("created (server dry run)")),
            "{path}: {out}"
        );
    }
    // Nothing was written by the dry runs.
    for kind in ["pods", "configmaps", "jobs", "statefulsets"] {
        assert_eq!(c.ctl(&["get", kind, "-o", "name"]).ok(), "", "{kind}");
    }
    for f in &files {
        c.ctl(&["apply", "-f", f.to_str().expect("utf-8")]).ok();
    }
    assert_eq!(
        c.ctl(&["get", "configmaps", "-o", "name"]).ok(),
        "configmap/example-redis-config\nconfigmap/special-config\n"
    );
    assert_eq!(c.ctl(&["get", "jobs", "-o", "name"]).ok(), "job/pi\n");
    assert_eq!(
        c.ctl(&["get", "statefulsets", "-o", "name"]).ok(),
        "statefulset/web\n"
    );
    let pods = c.ctl(&["get", "pods", "-o", "name"]).ok();
    for p in [
        "pod/dapi-test-pod",
        "pod/init-demo",
        "pod/redis",
        "pod/liveness-http",
        "pod/security-context-demo",
        "pod/lifecycle-demo",
    ] {
        assert!(pods.lines().any(|l| l == p), "{p} missing from {pods}");
    }
}
