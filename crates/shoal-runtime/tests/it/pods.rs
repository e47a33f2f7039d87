//! Containers of one pod share the network namespace and emptyDir volumes.

use std::fs;
use std::time::Duration;

use shoal_runtime::{Mount, MountSource};

use crate::common::{TestRuntime, eventually};

#[test]
#[ignore = "requires root: namespaces, overlayfs, cgroups"]
fn containers_of_a_pod_share_localhost_and_empty_dir() {
    let t = TestRuntime::new("pod");
    let pod = t.pod("shared-pod");
    let vol = |read_only| {
        vec![Mount {
            source: MountSource::EmptyDir("shared".into()),
            destination: "/shared".into(),
            read_only,
        }]
    };
    let mut server = t.sh(
        "pod-server",
        "echo from-server > /shared/hello; nc -l -p 8080 > /shared/received",
    );
    server.mounts = vol(false);
    t.rt.create_and_start(&pod, server).expect("start server");
    // The message comes from a file, not `echo |`: busybox nc exits when the
    // server's side closes (the server's stdin is empty, so it shuts down its
    // write half at once), which could come before echo had written the pipe.
    // A file is readable at once, and nc reads stdin before the socket.
    let mut client = t.sh(
        "pod-client",
        "while [ ! -e /shared/hello ]; do sleep 0.05; done; cat /shared/hello; \
         echo over-localhost > /tmp/msg; \
         i=0; until nc 127.0.0.1 8080 < /tmp/msg; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done",
    );
    client.mounts = vol(false);
    t.rt.create_and_start(&pod, client).expect("start client");
    let st =
        t.rt.wait("pod-client", Duration::from_secs(20))
            .expect("client");
    assert_eq!(
        st.exit().map(|e| e.exit_code),
        Some(0),
        "{st:?} {:?}",
        t.log_lines("pod-client")
    );
    assert_eq!(t.log_lines("pod-client"), vec!["stdout from-server"]);
    let st =
        t.rt.wait("pod-server", Duration::from_secs(20))
            .expect("server");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?}");
    let received = pod.volume_dir("shared").join("received");
    eventually("the server's file", Duration::from_secs(5), || {
        fs::read_to_string(&received)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s == "over-localhost\n" {
                    Ok(())
                } else {
                    Err(s)
                }
            })
    });

    // Another pod does not share the volume or the network.
    let other = t.pod("other-pod");
    t.rt.create_and_start(
        &other,
        t.sh(
            "other-c",
            "test ! -e /shared/hello && ! echo x | nc -w 1 127.0.0.1 8080",
        ),
    )
    .expect("start");
    let st =
        t.rt.wait("other-c", Duration::from_secs(20))
            .expect("other");
    assert_eq!(st.exit().map(|e| e.exit_code), Some(0), "{st:?}");

    // Removing the pod removes its containers and volumes.
    let dir = pod.dir.clone();
    t.rt.remove_sandbox("shared-pod").expect("remove pod");
    assert!(!dir.exists());
    // The detached cleaner unmounts the namespace and deletes the files.
    let data = t.dir.path().to_path_buf();
    eventually("the trash to be emptied", Duration::from_secs(10), || {
        let left: Vec<_> = fs::read_dir(data.join("trash"))
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n != ".lock")
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&format!("{}/pods/shared-pod", data.display()))
            && !mounts.contains("/trash/shared-pod"),
        "netns still mounted"
    );
    assert!(t.rt.status("pod-server").is_err());
}
