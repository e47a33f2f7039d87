//! The registry client against a real registry: Debian's `docker-registry` on a loopback
//! port with htpasswd auth, over plain HTTP and over TLS with a test CA, a busybox image
//! pushed into it with skopeo (Docker v2 schema 2 and OCI). The cases a real registry
//! cannot produce (a blob that does not match its digest, an index without this
//! platform, a bearer-token server, a download cut off half-way) come from a small HTTP
//! server on loopback at the end of this file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_image::ImageStore;
use shoal_image::digest::Digest;
use shoal_image::registry::{
    DockerConfig, FailureKind, Keyring, RegistriesConfig, RegistryClient, RegistryError,
};
use shoal_testkit::TestRegistry;

const USER: &str = "puller";
const PASS: &str = "s3cret-pass";

fn busybox_archive(dir: &Path) -> std::path::PathBuf {
    shoal_testkit::image::busybox(dir, "busybox:v1")
}

fn secret(addr: &str, user: &str, pass: &str) -> Keyring {
    let json = format!(r#"{{"auths":{{"{addr}":{{"username":"{user}","password":"{pass}"}}}}}}"#);
    Keyring {
        secrets: vec![DockerConfig::parse(json.as_bytes(), "secret regcred").unwrap()],
    }
}

/// `registries.yaml` that reaches `addr` over plain HTTP.
fn http_mirror(addr: &str) -> RegistriesConfig {
    RegistriesConfig::parse(
        &format!("mirrors:\n  \"{addr}\":\n    endpoint: [\"http://{addr}\"]\n"),
        "registries.yaml",
    )
    .unwrap()
}

async fn pull(
    client: &RegistryClient,
    image: &str,
    keyring: &Keyring,
    store: &ImageStore,
) -> Result<shoal_image::registry::Pulled, RegistryError> {
    let partial = store.root().join("partial");
    client
        .pull(image, keyring, store, &partial, &[image.to_string()])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_by_tag_and_digest_over_http_with_basic_auth_and_says_why_it_cannot() {
    let t = tempfile::tempdir().unwrap();
    let mut reg = TestRegistry::start(Some((USER, PASS)), None);
    let archive = busybox_archive(t.path());
    let v2 = reg.push(&archive, "library/busybox:v1", "v2s2");
    let oci = reg.push(&archive, "library/busybox:oci", "oci");
    let addr = reg.addr.clone();
    let client = RegistryClient::new(http_mirror(&addr));
    let keys = secret(&addr, USER, PASS);

    // By tag: the image's digest is the one skopeo pushed.
    let store = ImageStore::open(t.path().join("a")).unwrap();
    let started = Instant::now();
    let image = format!("{addr}/library/busybox:v1");
    let p = pull(&client, &image, &keys, &store)
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}\n{}", reg.log()));
    eprintln!("pulled {image} in {:?}", started.elapsed());
    assert_eq!(p.image.digest.to_string(), v2);
    assert!(p.downloaded > 100_000, "{}", p.downloaded);
    assert!(p.image.layer_dirs[0].join("bin/busybox").is_file());
    assert_eq!(store.resolve(&image).unwrap().digest.to_string(), v2);
    assert_eq!(p.endpoint, format!("http://{addr}"));
    // Again: nothing to download.
    let again = pull(&client, &image, &keys, &store).await.unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(
        std::fs::read_dir(store.root().join("partial"))
            .unwrap()
            .count(),
        0,
        "partial files left behind"
    );

    // Two pulls of the same image at once into one store both succeed.
    let store2 = ImageStore::open(t.path().join("c")).unwrap();
    let (x, y) = tokio::join!(
        pull(&client, &image, &keys, &store2),
        pull(&client, &image, &keys, &store2)
    );
    assert_eq!(x.unwrap().image.digest.to_string(), v2);
    assert_eq!(y.unwrap().image.digest.to_string(), v2);

    // By digest, OCI media types, into an empty store.
    let store = ImageStore::open(t.path().join("b")).unwrap();
    let by_digest = format!("{addr}/library/busybox@{oci}");
    let p = pull(&client, &by_digest, &keys, &store)
        .await
        .unwrap_or_else(|e| panic!("pull {by_digest}: {e}"));
    assert_eq!(p.image.digest.to_string(), oci);
    assert_ne!(oci, v2);
    assert!(p.image.layer_dirs[0].join("bin/busybox").is_file());

    // A wrong password.
    let e = pull(&client, &image, &secret(&addr, USER, "wrong"), &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Unauthorized, "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("unauthorized: "), "{msg}");
    assert!(msg.contains(&format!("{USER:?}")), "{msg}");
    // No credentials at all.
    let e = pull(&client, &image, &Keyring::default(), &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("none are configured"), "{e}");
    // A tag that is not there.
    let e = pull(
        &client,
        &format!("{addr}/library/busybox:nope"),
        &keys,
        &store,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), FailureKind::NotFound, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("has no manifest {addr}/library/busybox:nope")),
        "{e}"
    );
    // A closed port.
    let closed = format!("127.0.0.1:{}", shoal_testkit::free_port());
    let e = pull(
        &RegistryClient::new(http_mirror(&closed)),
        &format!("{closed}/library/busybox:v1"),
        &keys,
        &store,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Unreachable, "{e}");
    assert_eq!(
        e.to_string(),
        format!("unreachable: http://{closed}: connection refused")
    );
    // The registry's HTTPS default endpoint, which is plain HTTP here: a TLS error.
    let e = pull(
        &RegistryClient::new(RegistriesConfig::default()),
        &image,
        &keys,
        &store,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Tls, "{e}");
    assert!(
        e.to_string().starts_with(&format!("TLS: https://{addr}: ")),
        "{e}"
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it (PEM).
fn test_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "shoal registry test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem(), ca_cert.pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_over_tls_with_a_test_ca() {
    let t = tempfile::tempdir().unwrap();
    let (cert, key, ca) = test_ca();
    let mut reg = TestRegistry::start(Some((USER, PASS)), Some((&cert, &key, &ca)));
    let archive = busybox_archive(t.path());
    let digest = reg.push(&archive, "tls/busybox:v1", "v2s2");
    let addr = reg.addr.clone();
    let image = format!("{addr}/tls/busybox:v1");
    let keys = secret(&addr, USER, PASS);
    let store = ImageStore::open(t.path().join("s")).unwrap();
    let ca_file = reg.ca_file.clone().unwrap();

    // The registry over HTTPS (no mirror), trusting the test CA.
    let with_ca = RegistriesConfig::parse(
        &format!(
            "configs:\n  \"{addr}\":\n    tls:\n      ca_file: {}\n",
            ca_file.display()
        ),
        "registries.yaml",
    )
    .unwrap();
    let p = pull(&RegistryClient::new(with_ca), &image, &keys, &store)
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}\n{}", reg.log()));
    assert_eq!(p.image.digest.to_string(), digest);
    assert_eq!(p.endpoint, format!("https://{addr}"));

    // Without the CA the certificate is unknown.
    let store = ImageStore::open(t.path().join("s2")).unwrap();
    let e = pull(
        &RegistryClient::new(RegistriesConfig::default()),
        &image,
        &keys,
        &store,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Tls, "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // insecure_skip_verify accepts it.
    let skip = RegistriesConfig::parse(
        &format!("configs:\n  \"{addr}\":\n    tls: {{insecure_skip_verify: true}}\n"),
        "registries.yaml",
    )
    .unwrap();
    let p = pull(&RegistryClient::new(skip), &image, &keys, &store)
        .await
        .unwrap();
    assert_eq!(p.image.digest.to_string(), digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_resumed_downloads_digest_mismatch_and_platformless_index() {
    let t = tempfile::tempdir().unwrap();
    let server = Tiny::start();
    let addr = server.addr.clone();
    let client = RegistryClient::new(http_mirror(&addr));
    let keys = secret(&addr, "tok", "en");

    // A good image: its zstd layer is cut off half-way the first time and resumed.
    let store = ImageStore::open(t.path().join("s")).unwrap();
    let image = format!("{addr}/good:v1");
    let p = pull(&client, &image, &keys, &store)
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}"));
    assert_eq!(p.image.digest, server.good_manifest);
    assert_eq!(
        std::fs::read(p.image.layer_dirs[0].join("etc/hello")).unwrap(),
        b"hello from zstd\n"
    );
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /token") && l.contains("auth=basic")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("/blobs/") && l.contains("range=bytes=")),
        "the cut-off blob was not resumed: {log:#?}"
    );

    // A layer whose bytes are not what the manifest says.
    let e = pull(&client, &format!("{addr}/bad:v1"), &keys, &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::DigestMismatch, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "digest mismatch: blob {} of {addr}/bad:v1 from http://{addr}: expected {}",
            server.bad_layer, server.bad_layer
        )),
        "{msg}"
    );
    assert!(store.resolve(&format!("{addr}/bad:v1")).is_err());
    assert!(!store.has_blob(&server.bad_layer));

    // An index without this node's platform.
    let e = pull(&client, &format!("{addr}/multi:v1"), &keys, &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::NoPlatform, "{e}");
    assert!(
        e.to_string().contains("(it has: linux/arm64, linux/s390x)"),
        "{e}"
    );

    // The token server refuses wrong credentials.
    let e = pull(&client, &image, &secret(&addr, "tok", "nope"), &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("token server refused"), "{e}");
}

/// A small registry on loopback for what a real one cannot be made to do: a bearer-token
/// server (`/token`, credentials `tok:en`), `good:v1` (its zstd layer cut off after half
/// the first time, `Range` honoured after), `bad:v1` (a layer with other bytes than its
/// digest), `multi:v1` (an index of arm64 and s390x only).
struct Tiny {
    addr: String,
    good_manifest: Digest,
    bad_layer: Digest,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Tiny {
    fn start() -> Tiny {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut files: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();

        // good:v1
        // 64 KiB that do not compress, so that the blob is worth cutting.
        let mut noise = vec![0u8; 64 << 10];
        let mut x: u32 = 0x9e37_79b9;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let tar = layer_tar(&[("etc/hello", b"hello from zstd\n"), ("etc/noise", &noise)]);
        let zst = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let (good_manifest, good) =
            image(&tar, &zst, "application/vnd.oci.image.layer.v1.tar+zstd");
        files.extend(good.into_iter().map(|(k, v)| (format!("good/{k}"), v)));
        // bad:v1: the manifest names the digest of one layer, the blob has other bytes.
        let tar = layer_tar(&[("etc/x", b"x\n")]);
        let (_, mut bad) = image(&tar, &tar, "application/vnd.oci.image.layer.v1.tar");
        let bad_layer = Digest::of_bytes(&tar);
        let mut evil = tar.clone();
        evil[600] ^= 0xff;
        bad.insert(
            format!("blobs/{bad_layer}"),
            ("application/octet-stream".into(), evil),
        );
        files.extend(bad.into_iter().map(|(k, v)| (format!("bad/{k}"), v)));
        // multi:v1
        let entry = |arch: &str| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": Digest::of_bytes(arch.as_bytes()).to_string(), "size": 10,
                "platform": {"os": "linux", "architecture": arch}})
        };
        let index = serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry("arm64"), entry("s390x")]});
        files.insert(
            "multi/manifests/v1".into(),
            (
                "application/vnd.oci.image.index.v1+json".into(),
                serde_json::to_vec(&index).unwrap(),
            ),
        );

        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let files = Arc::new(files);
        let cut = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let (l2, s2, a2) = (log.clone(), stop.clone(), addr.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (files, log, cut, addr) = (files.clone(), l2.clone(), cut.clone(), a2.clone());
                std::thread::spawn(move || serve(conn, &files, &log, &cut, &addr));
            }
        });
        Tiny {
            addr,
            good_manifest,
            bad_layer,
            log,
            stop,
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// (manifest digest, path → (content type, bytes)) of a one-layer image.
fn image(
    tar: &[u8],
    blob: &[u8],
    layer_type: &str,
) -> (Digest, BTreeMap<String, (String, Vec<u8>)>) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of_bytes(tar).to_string()]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of_bytes(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": Digest::of_bytes(blob).to_string(),
            "size": blob.len()}]
    }))
    .unwrap();
    let md = Digest::of_bytes(&manifest);
    let mut m = BTreeMap::new();
    let oct = || "application/octet-stream".to_string();
    m.insert(
        format!("blobs/{}", Digest::of_bytes(&config)),
        (oct(), config),
    );
    m.insert(
        format!("blobs/{}", Digest::of_bytes(blob)),
        (oct(), blob.to_vec()),
    );
    let mt = "application/vnd.oci.image.manifest.v1+json".to_string();
    m.insert(format!("manifests/{md}"), (mt.clone(), manifest.clone()));
    m.insert("manifests/v1".into(), (mt, manifest));
    (md, m)
}

fn serve(
    conn: TcpStream,
    files: &BTreeMap<String, (String, Vec<u8>)>,
    log: &Mutex<Vec<String>>,
    cut: &Mutex<std::collections::BTreeSet<String>>,
    addr: &str,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    let range = headers.get("range").cloned();
    log.lock().unwrap().push(format!(
        "GET {target} auth={} range={}",
        auth.split(' ').next().unwrap_or("").to_ascii_lowercase(),
        range.clone().unwrap_or_default()
    ));
    let respond = |w: &mut TcpStream, status: &str, extra: &str, ctype: &str, body: &[u8]| {
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = w.write_all(body);
    };
    if target.starts_with("/token") {
        // tok:en
        if auth == "Basic dG9rOmVu" {
            respond(
                &mut w,
                "200 OK",
                "",
                "application/json",
                br#"{"token":"t0k3n"}"#,
            );
        } else {
            respond(&mut w, "401 Unauthorized", "", "application/json", b"{}");
        }
        return;
    }
    if auth != "Bearer t0k3n" {
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"tiny\"\r\n");
        respond(
            &mut w,
            "401 Unauthorized",
            &challenge,
            "application/json",
            b"{}",
        );
        return;
    }
    let key = target.strip_prefix("/v2/").unwrap_or("").to_string();
    let Some((ctype, body)) = files.get(&key) else {
        respond(&mut w, "404 Not Found", "", "application/json", b"{}");
        return;
    };
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    if key.starts_with("good/blobs/") && body.len() > 10_000 && from.is_none() {
        // The first download of the big blob stops half-way.
        if cut.lock().unwrap().insert(key.clone()) {
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = w.write_all(&body[..body.len() / 2]);
            return;
        }
    }
    match from {
        Some(f) if f < body.len() => {
            let extra = format!(
                "Content-Range: bytes {f}-{}/{}\r\n",
                body.len() - 1,
                body.len()
            );
            respond(&mut w, "206 Partial Content", &extra, ctype, &body[f..]);
        }
        _ => respond(&mut w, "200 OK", "", ctype, body),
    }
    let _ = reader.read(&mut [0u8; 1]);
}
