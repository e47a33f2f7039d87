//! The seed corpus, built in code so that it can be regenerated
//! (`cargo run -p shoal-fuzz --bin shoal-fuzz-seeds -- fuzz/corpus`): valid
//! manifests, selectors, quantities, small real images (docker-save and OCI
//! layout, plain and gzip'd layers, links and whiteouts) and DNS queries.

use std::io::{self, Write};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// `(target, file name, bytes)` for every seed.
pub fn all() -> io::Result<Vec<(&'static str, String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (i, m) in MANIFESTS.iter().enumerate() {
        out.push(("manifest", format!("seed-{i}.yaml"), m.as_bytes().to_vec()));
    }
    for (i, s) in SELECTORS.iter().enumerate() {
        out.push(("selector", format!("seed-{i}"), s.as_bytes().to_vec()));
    }
    for (i, q) in QUANTITIES.iter().enumerate() {
        out.push(("quantity", format!("seed-{i}"), q.as_bytes().to_vec()));
    }
    for (name, bytes) in images()? {
        out.push(("image", name, bytes));
    }
    for (name, bytes) in dns_queries() {
        out.push(("dns", name, bytes));
    }
    Ok(out)
}

const MANIFESTS: [&str; 5] = [
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: web\n    image: busybox:latest\n    command: [sh, -c, 'sleep 1000']\n    env: [{name: A, value: b}]\n    ports: [{containerPort: 80, protocol: TCP}]\n    resources:\n      requests: {cpu: 100m, memory: 16Mi}\n      limits: {cpu: '1', memory: 64Mi}\n    volumeMounts: [{name: data, mountPath: /data}]\n  volumes:\n  - name: data\n    emptyDir: {}\n  restartPolicy: Always\n",
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n    matchExpressions: [{key: tier, operator: In, values: [a, b]}]\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}\n  template:\n    metadata:\n      labels: {app: web, tier: a}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        readinessProbe:\n          httpGet: {path: /, port: 80}\n        livenessProbe:\n          exec: {command: ['true']}\n",
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: prod\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080, protocol: TCP}\n---\napiVersion: shoal/v1\nkind: Namespace\nmetadata:\n  name: prod\n",
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"j\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}],\"volumes\":[{\"name\":\"h\",\"hostPath\":{\"path\":\"/tmp\"}}],\"nodeSelector\":{\"disk\":\"ssd\"}}}\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: sec}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext:\n      runAsUser: 0\n      seccompProfile: {type: Unconfined}\n      capabilities: {add: [NET_ADMIN, CAP_SYS_TIME], drop: [chown, ALL]}\n",
];

const SELECTORS: [&str; 6] = [
    "app=web",
    "app==web,tier!=db",
    "env in (prod, staging),!canary",
    "tier notin (a,b),release",
    "example.com/app=v1.2_x",
    "",
];

const QUANTITIES: [&str; 10] = [
    "250m",
    "1",
    "1.5",
    "64Mi",
    "1Gi",
    "2e3",
    "1E-2",
    "-3k",
    "0.000000001",
    "8Ei",
];

/// A small layer: a directory, a file, a symlink, a hard link, a whiteout.
fn layer(extra: bool) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        match link {
            Some(l) => b.append_link(&mut h, path, l),
            None => b.append_data(&mut h, path, data),
        }
    };
    add("etc/", tar::EntryType::Directory, b"", None)?;
    add("etc/hostname", tar::EntryType::Regular, b"fuzz\n", None)?;
    add("etc/link", tar::EntryType::Symlink, b"", Some("hostname"))?;
    add("etc/hard", tar::EntryType::Link, b"", Some("etc/hostname"))?;
    if extra {
        add("etc/.wh.link", tar::EntryType::Regular, b"", None)?;
        add("bin/", tar::EntryType::Directory, b"", None)?;
        add("bin/sh", tar::EntryType::Symlink, b"", Some("/bin/busybox"))?;
    }
    b.into_inner()
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data)?;
    e.finish()
}

fn images() -> io::Result<Vec<(String, Vec<u8>)>> {
    let t = tempfile::tempdir()?;
    let (l1, l2) = (layer(false)?, layer(true)?);
    let ds = t.path().join("ds.tar");
    shoal_image::testimage::write_docker_save(&ds, "fuzz:v1", &[l1.clone(), l2.clone()], &["sh"])?;
    let oci = t.path().join("oci.tar");
    shoal_image::testimage::write_oci_layout_gz(
        &oci,
        "fuzz:oci",
        std::slice::from_ref(&l1),
        &["true"],
    )?;
    let with_mode = |m: u8, bytes: Vec<u8>| {
        let mut v = vec![m];
        v.extend(bytes);
        v
    };
    Ok(vec![
        ("docker-save".into(), with_mode(0, std::fs::read(&ds)?)),
        ("oci-layout-gz".into(), with_mode(0, std::fs::read(&oci)?)),
        ("layer".into(), with_mode(1, l1)),
        ("layer-whiteout".into(), with_mode(1, l2.clone())),
        ("layer-gz".into(), with_mode(1, gzip(&l2)?)),
    ])
}

fn dns_queries() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let cases = [
        (
            "a-known",
            "web.default.svc.shoal.local.",
            RecordType::A,
            false,
        ),
        (
            "a-many-edns",
            "many.default.svc.shoal.local.",
            RecordType::A,
            true,
        ),
        (
            "aaaa-known",
            "web.default.svc.shoal.local.",
            RecordType::AAAA,
            false,
        ),
        ("soa-apex", "shoal.local.", RecordType::SOA, false),
        ("any-parent", "svc.shoal.local.", RecordType::ANY, true),
        ("nx-outside", "example.org.", RecordType::A, false),
    ];
    for (i, (name, qname, rtype, edns)) in cases.into_iter().enumerate() {
        let Ok(n) = Name::from_str(qname) else {
            continue;
        };
        let mut m = Message::new();
        m.set_id(0x1000 + i as u16)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(n, rtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        if let Ok(bytes) = m.to_vec() {
            for (mode, suffix) in [(1u8, "udp"), (0u8, "tcp")] {
                let mut v = vec![mode];
                v.extend(&bytes);
                out.push((format!("{name}-{suffix}"), v));
            }
        }
    }
    out
}
