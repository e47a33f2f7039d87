//! `shoalctl cluster add-member|remove-member|snapshot save` against real controller
//! processes, and `shoal-controller --restore` of the saved file.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Cluster, controller_bin, eventually, free_port, run_ctl};

fn pod(name: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

/// A controller process started by the test; killed (by PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn add_member_and_remove_member_with_refusals() {
    let mut c = Cluster::start(1);
    let a1 = c.addrs[0].clone();
    let a2 = c.spawn_member(2);
    let unreachable = format!("3=127.0.0.1:{}", free_port());
    let e = run_ctl(&a1, &["cluster", "add-member", &unreachable], None).err();
    assert!(e.contains("unreachable"), "{e}");
    let e = run_ctl(&a1, &["cluster", "add-member", "3"], None).err();
    assert!(e.contains("expected ID=HOST:PORT"), "{e}");
    let members = |c: &Cluster| -> usize {
        let text = c.ctl(&["cluster", "status", "-o", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["members"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(members(&c), 1, "membership unchanged");

    let out = eventually("adding member 2", Duration::from_secs(30), || {
        let r = run_ctl(&a1, &["cluster", "add-member", &format!("2={a2}")], None);
        if r.code == 0 {
            Ok(r.stdout)
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert!(out.starts_with("member 2 ("), "{out}");
    assert!(out.contains("added as a voter"), "{out}");
    let status = c.ctl(&["cluster", "status"]).ok();
    let row2 = status
        .lines()
        .find(|l| l.starts_with("2 "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(row2.contains(&a2) && row2.contains(" yes "), "{status}");

    let a3 = c.spawn_member(3);
    let e = run_ctl(&a1, &["cluster", "add-member", &format!("2={a3}")], None).err();
    assert!(e.contains("member id 2 is already in use"), "{e}");
    let e = run_ctl(&a1, &["cluster", "add-member", &format!("3={a2}")], None).err();
    assert!(e.contains("already used by member 2"), "{e}");
    let e = run_ctl(&a1, &["cluster", "remove-member", "9"], None).err();
    assert!(e.contains("9 is not a member"), "{e}");
    let e = run_ctl(&a1, &["cluster", "remove-member", "x"], None).err();
    assert!(e.contains("positive integer"), "{e}");

    // Remove member 2 through member 2 itself (forwarded to the leader).
    let out = run_ctl(&a2, &["cluster", "remove-member", "2"], None).ok();
    assert!(out.starts_with("member 2 removed"), "{out}");
    let e = run_ctl(&a1, &["cluster", "remove-member", "1"], None).err();
    assert!(e.contains("last"), "{e}");
    assert_eq!(members(&c), 1);
}

#[test]
fn snapshot_save_restores_into_a_new_cluster() {
    let c = Cluster::start(1);
    for i in 0..5 {
        c.ctl_stdin(&["apply", "-f", "-"], &pod(&format!("p{i}")))
            .ok();
    }
    c.ctl(&["delete", "pod", "p4"]).ok();
    // The reconcilers mark the pending pods (there is no node): wait until that settled, so
    // that the restored cluster's own reconcilers have nothing left to change either.
    let mut last = String::new();
    let before = eventually("the pods settle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(700));
        let now = c.ctl(&["get", "pods", "-o", "json"]).ok();
        if now == last {
            Ok(now)
        } else {
            last = now;
            Err(last.clone())
        }
    });
    let file = c.dir().join("backup.snap");
    let r = c.ctl(&["cluster", "snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("snapshot saved to") && r.stderr.contains("revision"),
        "{r:?}"
    );
    assert!(!c.dir().join("backup.snap.partial").exists());

    // A truncated copy is refused by the controller with a clear error.
    let data = std::fs::read(&file).unwrap();
    let bad = c.dir().join("bad.snap");
    std::fs::write(&bad, &data[..data.len() / 2]).unwrap();
    let out = Command::new(controller_bin())
        .args([
            "--id",
            "1",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--registry-listen",
            "none",
            "--metrics-listen",
            "none",
        ])
        .arg("--data-dir")
        .arg(c.dir().join("bad"))
        .arg("--restore")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("truncated"), "{err}");

    let addr = format!("127.0.0.1:{}", free_port());
    let _restored = Proc(
        Command::new(controller_bin())
            .args([
                "--id",
                "5",
                "--listen",
                &addr,
                "--registry-listen",
                "none",
                "--metrics-listen",
                "none",
            ])
            .arg("--data-dir")
            .arg(c.dir().join("restored"))
            .arg("--restore")
            .arg(&file)
            .env("SHOAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The restored member keeps the backup's CA and writes a fresh admin.conf.
    crate::harness::register(
        std::slice::from_ref(&addr),
        c.dir().join("restored").join("admin.conf"),
    );
    let after = eventually(
        "the restored cluster lists the pods",
        Duration::from_secs(30),
        || {
            let r = run_ctl(&addr, &["get", "pods", "-o", "json"], None);
            if r.code == 0 {
                Ok(r.stdout)
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    let versions = |text: &str| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    assert_eq!(versions(&after), versions(&before));
    assert_eq!(versions(&after).len(), 4);
}
