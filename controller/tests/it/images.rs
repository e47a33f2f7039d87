//! Image distribution through real controller processes: import a real busybox image through
//! one member, resolve and list it through another, download every blob (from an offset, too)
//! through a third after the importing member was SIGKILLed; malicious archives are refused;
//! remove deletes unused blobs. And the proxy's error paths (no agent needed for those).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use shoal_proto::images_client::ImagesClient;
use shoal_proto::proxy_client::ProxyClient;
use shoal_proto::{
    BlobRequest, ExecInput, ExecStart, ImageInfo, ImageListRequest, ImageRemoveRequest,
    ImportChunk, LogsRequest, ObjectRequest, ResolveRequest, StatsRequest, exec_input,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::harness::{TestCluster, client, eventually};

async fn channel(addr: &str) -> Result<Channel, String> {
    let conf = shoal_testkit::conf_for(addr)?;
    shoal_testkit::channel_timeout(&conf, addr, Duration::from_secs(120)).await
}

async fn images(addr: &str) -> ImagesClient<Channel> {
    let ch = eventually("images client", Duration::from_secs(10), || channel(addr)).await;
    ImagesClient::new(ch)
}

/// Streams `path` to `Import` in 256 KiB chunks.
async fn import(addr: &str, path: &Path, tag: &str) -> Result<Vec<ImageInfo>, tonic::Status> {
    let data = std::fs::read(path).expect("read tarball");
    let mut chunks: Vec<ImportChunk> = data
        .chunks(256 * 1024)
        .map(|c| ImportChunk {
            data: c.to_vec(),
            tag: String::new(),
        })
        .collect();
    if let Some(first) = chunks.first_mut() {
        first.tag = tag.to_string();
    }
    let mut c = images(addr).await;
    c.import(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner().images)
}

/// Downloads a blob from `offset`; returns (bytes, size announced in the first chunk).
async fn download(addr: &str, digest: &str, offset: u64) -> Result<(Vec<u8>, u64), tonic::Status> {
    let mut c = images(addr).await;
    let mut s = c
        .blob(BlobRequest {
            digest: digest.to_string(),
            offset,
            local_only: false,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    let mut size = None;
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        size.get_or_insert(chunk.size);
        out.extend_from_slice(&chunk.data);
    }
    Ok((out, size.unwrap_or(0)))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn busybox_tarball(dir: &Path, name: &str) -> std::path::PathBuf {
    let out = dir.join("busybox.tar");
    shoal_image::testimage::busybox_docker_save(
        Path::new(shoal_image::testimage::BUSYBOX),
        &out,
        name,
    )
    .expect("build the busybox image tarball (needs Debian's busybox-static)");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
async fn image_blobs_replicate_and_survive_the_importing_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("shoal-test/busybox-{}:v1", std::process::id());
    let tarball = busybox_tarball(dir.path(), &name);
    // Frequent snapshots keep the Raft log short: after the SIGKILL the new leader's first
    // AppendEntries may carry the un-purged log tail, which must arrive within openraft's
    // 100 ms RPC deadline (see docs/design/0003-image-distribution.md).
    let mut c = TestCluster::with(3, 10, &[]);
    c.wait_leader(&[1, 2, 3]).await;
    let (a1, a2, a3) = (c.addr(1), c.addr(2), c.addr(3));

    let started = std::time::Instant::now();
    let imported = eventually(
        "import through member 1",
        Duration::from_secs(180),
        || async {
            import(&a1, &tarball, "busybox-extra")
                .await
                .map_err(|s| format!("{s:?}"))
        },
    )
    .await;
    let tar_len = std::fs::metadata(&tarball).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "imported a {tar_len}-byte tarball through member 1 in {:?}",
        started.elapsed()
    );
    assert_eq!(imported.len(), 1, "{imported:?}");
    let img = imported[0].clone();
    assert!(img.names.contains(&name), "{:?}", img.names);
    assert!(
        img.names.contains(&"busybox-extra:latest".to_string()),
        "tag normalized: {:?}",
        img.names
    );
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layer_sizes.len(), 1);
    assert!(img.size > 500_000, "busybox layer size {}", img.size);
    let config: serde_json::Value = serde_json::from_str(&img.config_json).expect("config json");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["sh"]),
        "{config}"
    );

    // Resolve and List through member 2 (by name, by short name, by digest).
    let mut i2 = images(&a2).await;
    for reference in [
        name.clone(),
        "busybox-extra".to_string(),
        img.digest.clone(),
    ] {
        let r = i2
            .resolve(ResolveRequest {
                name: reference.clone(),
            })
            .await
            .expect("resolve")
            .into_inner();
        assert_eq!(r, img, "resolve {reference}");
    }
    let listed = i2
        .list(ImageListRequest {})
        .await
        .expect("list")
        .into_inner()
        .images;
    assert_eq!(listed, vec![img.clone()]);
    let missing = i2
        .resolve(ResolveRequest {
            name: "nope:1".into(),
        })
        .await
        .expect_err("unknown image");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    // The bytes are on disk on two of the three members (the importer and one more).
    let dirs: Vec<std::path::PathBuf> = (1..=3).map(|i| c.data_dir(i)).collect();
    let on_disk = |d: &str| -> Vec<u64> {
        let hex = d.trim_start_matches("sha256:");
        (1..=3u64)
            .filter(|i| {
                dirs[*i as usize - 1]
                    .join("blobs/sha256")
                    .join(hex)
                    .exists()
            })
            .collect()
    };
    for d in img.layers.iter().chain([&img.config_digest, &img.digest]) {
        let holders = on_disk(d);
        assert_eq!(holders.len(), 2, "{d} is on members {holders:?}");
        assert!(
            holders.contains(&1),
            "{d}: the importer keeps a copy: {holders:?}"
        );
    }
    assert!(
        !on_disk(&img.layers[0]).contains(&3),
        "the second copy goes to the next member after the importer (2), not 3"
    );

    // The importing member dies; every blob is still served, byte-exact, by member 3.
    c.kill(1);
    let mut blobs = vec![img.config_digest.clone(), img.digest.clone()];
    blobs.extend(img.layers.iter().cloned());
    let mut layer = Vec::new();
    for d in &blobs {
        let (data, size) = eventually("blob from member 3", Duration::from_secs(20), || async {
            download(&a3, d, 0).await.map_err(|s| format!("{s:?}"))
        })
        .await;
        assert_eq!(sha256(&data), *d, "content of {d}");
        assert_eq!(size, data.len() as u64, "announced size of {d}");
        if img.layers.contains(d) {
            assert_eq!(size, img.layer_sizes[0]);
            layer = data;
        }
    }

    // Member 3 fetched what it lacked from member 2, once, and keeps it.
    for d in &blobs {
        assert!(on_disk(d).contains(&3), "{d} is now on member 3 too");
    }

    // Resumable: from an offset inside the second chunk, from the end, past the end.
    let offset = (1 << 20) + 4321;
    assert!(
        layer.len() > offset,
        "the layer spans more than one chunk ({} bytes)",
        layer.len()
    );
    let (tail, size) = download(&a3, &img.layers[0], offset as u64)
        .await
        .expect("download from offset");
    assert_eq!(size, layer.len() as u64);
    assert_eq!(tail, layer[offset..], "bytes from offset {offset}");
    let (tail, _) = download(&a3, &img.layers[0], 77)
        .await
        .expect("download from 77");
    assert_eq!(tail, layer[77..]);
    let (empty, _) = download(&a3, &img.layers[0], layer.len() as u64)
        .await
        .expect("download from the end");
    assert!(empty.is_empty());
    let past = download(&a3, &img.layers[0], layer.len() as u64 + 1)
        .await
        .expect_err("past the end");
    assert_eq!(past.code(), tonic::Code::OutOfRange, "{past:?}");

    // Re-import through member 2: nothing new, the new tag is added to the same image.
    // (Retried: right after the SIGKILL the two survivors may still be electing a leader.)
    let again = eventually(
        "re-import through member 2",
        Duration::from_secs(120),
        || async {
            import(&a2, &tarball, "busybox-again:2")
                .await
                .map_err(|s| format!("{s:?}"))
        },
    )
    .await;
    assert_eq!(again[0].digest, img.digest);
    assert!(
        again[0].names.contains(&name) && again[0].names.contains(&"busybox-again:2".to_string())
    );

    // Remove: dropping one name deletes nothing; dropping the last deletes the blobs.
    let mut i3 = images(&a3).await;
    for n in ["busybox-extra", "busybox-again:2"] {
        let r = i3
            .remove(ImageRemoveRequest { name: n.into() })
            .await
            .expect("remove a name")
            .into_inner();
        assert!(r.deleted_blobs.is_empty(), "{n}: {r:?}");
    }
    let r = i3
        .remove(ImageRemoveRequest { name: name.clone() })
        .await
        .expect("remove the last name")
        .into_inner();
    let mut deleted = r.deleted_blobs.clone();
    deleted.sort();
    blobs.sort();
    assert_eq!(deleted, blobs);
    let gone = i3
        .resolve(ResolveRequest {
            name: img.digest.clone(),
        })
        .await
        .expect_err("image gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let gone = download(&a2, &img.layers[0], 0)
        .await
        .expect_err("blob gone");
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    assert!(
        i2.list(ImageListRequest {})
            .await
            .expect("list")
            .into_inner()
            .images
            .is_empty()
    );
}

/// A docker-save tarball whose only layer holds an entry `../escaped` (path traversal).
fn malicious_tarball(dir: &Path) -> std::path::PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    let data = b"owned\n";
    let mut h = tar::Header::new_gnu();
    {
        let name = b"../escaped";
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name);
    }
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    layer.append(&h, &data[..]).expect("append raw entry");
    let layer = layer.into_inner().expect("layer tar");
    let out = dir.join("evil.tar");
    shoal_image::testimage::write_docker_save(&out, "evil:1", &[layer], &["sh"])
        .expect("write evil tarball");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
async fn malicious_or_broken_archives_are_refused_and_create_no_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let evil = malicious_tarball(dir.path());
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, vec![0x42u8; 10_000]).expect("write garbage");
    // A 2 MiB layer against a 1 MiB limit set by the flag.
    let big = {
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(2 << 20);
        layer
            .append_data(&mut h, "big", &vec![1u8; 2 << 20][..])
            .expect("append");
        let out = dir.path().join("big.tar");
        shoal_image::testimage::write_docker_save(
            &out,
            "big:1",
            &[layer.into_inner().expect("tar")],
            &["sh"],
        )
        .expect("write big tarball");
        out
    };
    let c = TestCluster::with(3, 5000, &["--image-max-unpacked-bytes", "1048576"]);
    c.wait_leader(&[1, 2, 3]).await;
    let (a1, a2) = (c.addr(1), c.addr(2));

    let e = import(&a1, &big, "").await.expect_err("over the limit");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("limit of 1048576 unpacked bytes")
            && e.message().contains("--image-max-unpacked-bytes"),
        "names the limit and the flag: {}",
        e.message()
    );

    let e = eventually("import answer", Duration::from_secs(30), || async {
        match import(&a1, &evil, "").await {
            Err(s) if s.code() == tonic::Code::InvalidArgument => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        e.message().contains("../escaped"),
        "names the entry: {}",
        e.message()
    );

    let e = import(&a1, &garbage, "")
        .await
        .expect_err("garbage refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    let e = import(&a1, &evil, "sha256:abc")
        .await
        .expect_err("bad tag refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    let mut i2 = images(&a2).await;
    assert!(
        i2.list(ImageListRequest {})
            .await
            .expect("list")
            .into_inner()
            .images
            .is_empty()
    );
    let e = i2
        .resolve(ResolveRequest {
            name: "evil:1".into(),
        })
        .await
        .expect_err("no image");
    assert_eq!(e.code(), tonic::Code::NotFound);
    // The controller's staging directory holds nothing after a refused import.
    let upload = c.members[0].data_dir.join("images-upload");
    let left: Vec<_> = std::fs::read_dir(&upload).expect("upload dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn create(addr: &str, v: serde_json::Value) {
    let mut c = client(addr).await.expect("cluster client");
    c.create(ObjectRequest {
        object_json: v.to_string(),
    })
    .await
    .expect("create object");
}

fn pod(name: &str, node: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}
    });
    if let Some(n) = node {
        v["spec"]["nodeName"] = serde_json::json!(n);
    }
    v
}

fn node(name: &str, endpoint: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "apiVersion": "shoal/v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": 110},
            "conditions": [{"type": "Ready", "status": "True"}],
            "heartbeatTime": chrono::Utc::now().to_rfc3339(),
        }
    });
    if let Some(e) = endpoint {
        v["status"]["agentEndpoint"] = serde_json::json!(e);
    }
    v
}

async fn logs_error(p: &mut ProxyClient<Channel>, pod: &str) -> tonic::Status {
    let req = LogsRequest {
        namespace: "default".into(),
        pod: pod.into(),
        tail_lines: -1,
        ..Default::default()
    };
    match p.logs(req).await {
        Ok(mut s) => match s.get_mut().next().await {
            Some(Err(e)) => e,
            other => panic!("logs of {pod}: expected an error, got {other:?}"),
        },
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reports_why_it_cannot_reach_a_pod() {
    let c = TestCluster::with(1, 5000, &[]);
    c.wait_leader(&[1]).await;
    let a = c.addr(1);
    let mut p =
        ProxyClient::new(eventually("proxy client", Duration::from_secs(10), || channel(&a)).await);

    let e = logs_error(&mut p, "px-nope").await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("px-nope"), "{}", e.message());

    // No node exists yet, so the scheduler cannot bind this pod.
    create(&a, pod("px-unscheduled", None)).await;
    let e = logs_error(&mut p, "px-unscheduled").await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not scheduled"), "{}", e.message());

    create(&a, node("px-noagent", None)).await;
    create(&a, pod("px-on-noagent", Some("px-noagent"))).await;
    let e = logs_error(&mut p, "px-on-noagent").await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("px-noagent") && e.message().contains("no agent endpoint"),
        "{}",
        e.message()
    );

    // An address where nothing listens.
    let dead = format!("127.0.0.1:{}", free_port());
    create(&a, node("px-dead", Some(&dead))).await;
    create(&a, pod("px-on-dead", Some("px-dead"))).await;
    let e = logs_error(&mut p, "px-on-dead").await;
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("px-dead") && e.message().contains(&dead),
        "{}",
        e.message()
    );

    let start = ExecInput {
        input: Some(exec_input::Input::Start(ExecStart {
            namespace: "default".into(),
            pod: "px-on-dead".into(),
            command: vec!["true".into()],
            ..Default::default()
        })),
    };
    let e = match p.exec(tokio_stream::iter(vec![start])).await {
        Ok(mut s) => s
            .get_mut()
            .next()
            .await
            .expect("an answer")
            .expect_err("exec must fail"),
        Err(e) => e,
    };
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("px-dead") && e.message().contains(&dead),
        "{}",
        e.message()
    );
    let bad = ExecInput {
        input: Some(exec_input::Input::Stdin(b"x".to_vec())),
    };
    let e = p
        .exec(tokio_stream::iter(vec![bad]))
        .await
        .expect_err("stdin before start");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    let e = p
        .stats(StatsRequest {
            node: "px-dead".into(),
        })
        .await
        .expect_err("stats of a dead agent");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&dead), "{}", e.message());

    // Every node: each failing node is listed with its error, and the call itself succeeds.
    let started = std::time::Instant::now();
    let all = p
        .stats(StatsRequest {
            node: String::new(),
        })
        .await
        .expect("stats of all nodes")
        .into_inner();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fan-out took {:?}",
        started.elapsed()
    );
    let names: Vec<&str> = all.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["px-dead", "px-noagent"], "{all:?}");
    assert!(all.nodes[0].error.contains(&dead), "{:?}", all.nodes[0]);
    assert!(
        all.nodes[1].error.contains("no agent endpoint"),
        "{:?}",
        all.nodes[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root: the controller's image store unpacks layers (ownership, device nodes)"]
async fn imports_larger_than_max_image_size_are_refused_as_bytes_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("shoal-test/busybox-limit-{}:v1", std::process::id());
    let tarball = busybox_tarball(dir.path(), &name);
    let limit = std::fs::metadata(&tarball).expect("tarball").len();
    // One byte over the limit (not a valid archive: refused on size before parsing).
    let over = dir.path().join("over.tar");
    std::fs::write(&over, vec![0u8; limit as usize + 1]).expect("write");
    let c = TestCluster::with(1, 5000, &["--max-image-size", &limit.to_string()]);
    c.wait_leader(&[1]).await;
    let a = c.addr(1);

    let e = eventually("import answer", Duration::from_secs(30), || async {
        match import(&a, &over, "").await {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        e.message().contains(&format!("limit of {limit} bytes"))
            && e.message().contains("--max-image-size"),
        "names the limit and the flag: {}",
        e.message()
    );
    let upload = c.members[0].data_dir.join("images-upload");
    let left: Vec<_> = std::fs::read_dir(&upload).expect("upload dir").collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");

    // Positive control: an archive of exactly the limit is imported.
    let got = import(&a, &tarball, "").await.expect("import at the limit");
    assert_eq!(got.len(), 1, "{got:?}");
}
