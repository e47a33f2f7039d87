//! Fuzz targets for everything Shoal parses from someone else: manifests
//! (YAML/JSON decode + validation), label selectors, quantities, image
//! tarballs (docker-save/OCI import and raw layers) and node DNS messages.
//!
//! Each target is a plain function `fn fuzz_X(data: &[u8])` that panics when
//! it finds a bug (a panic in the code under test, or a broken invariant such
//! as "an accepted manifest, written back as JSON, is accepted again and
//! means the same"). Two drivers call them:
//!
//! - `cargo test -p shoal-fuzz` (the short run in CI): replays the committed
//!   corpus in `fuzz/corpus/<target>/` (seeds and every crasher found so
//!   far) and a few seconds of inputs mutated from it by [`mutate`];
//! - AFL++ (the long run, `docs/fuzzing.md`): `cargo afl build --features
//!   afl` builds one binary per target from `src/bin/fuzz_*.rs`.
//!
//! This crate is a test harness: it depends on the crates it fuzzes and
//! nothing depends on it.

#![warn(missing_docs)]

pub mod mutate;
pub mod seeds;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hickory_proto::op::Message;
use shoal_api::{LabelSelector, Object, Quantity};
use shoal_image::ImageStore;
use shoal_image::limits::{Budget, Limits};
use shoal_net::dns::DnsTable;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// The targets, by name (the corpus directory of each is `corpus/<name>`).
pub const TARGETS: [(&str, Target); 5] = [
    ("manifest", fuzz_manifest),
    ("selector", fuzz_selector),
    ("quantity", fuzz_quantity),
    ("image", fuzz_image),
    ("dns", fuzz_dns),
];

/// Manifest decode + validation (`shoalctl apply`, the API server). An
/// accepted manifest, written back as JSON, must be accepted again and give
/// equal objects.
pub fn fuzz_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = shoal_api::parse_manifests("fuzz.yaml", text) else {
        return;
    };
    for o in objects {
        let json = o.to_json_string();
        let again = match Object::from_json_str(&json) {
            Ok(again) => again,
            Err(e) => panic!("accepted object does not decode again from {json}: {e}"),
        };
        let mut again = again;
        again.set_defaults();
        if let Err(e) = again.validate() {
            panic!("accepted object is invalid once written back as {json}: {e}");
        }
        assert_eq!(o, again, "round trip through {json} changed the object");
    }
}

/// Label selectors in their command-line form (`-l`, field selectors of
/// watches). An accepted selector, printed, parses to the same selector, and
/// matching never panics.
pub fn fuzz_selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = LabelSelector::parse(text) else {
        return;
    };
    let printed: Vec<String> = sel.requirements.iter().map(|r| r.to_string()).collect();
    let printed = printed.join(",");
    match LabelSelector::parse(&printed) {
        Ok(again) => assert_eq!(sel, again, "{text:?} printed as {printed:?}"),
        Err(e) => panic!("{text:?} printed as {printed:?} does not parse: {e}"),
    }
    let labels: std::collections::BTreeMap<String, String> = sel
        .requirements
        .iter()
        .map(|r| {
            let v = r.values.iter().next().cloned().unwrap_or_default();
            (r.key.clone(), v)
        })
        .collect();
    let _ = sel.matches(&labels);
}

/// Quantities (`resources.limits.memory: 64Mi`). Every conversion of an
/// accepted quantity is total, and its text parses to an equal value.
pub fn fuzz_quantity(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = Quantity::parse(text) else {
        return;
    };
    let _ = (q.as_millis(), q.as_i64(), q.as_bytes(), q.as_f64());
    let printed = q.to_string();
    match Quantity::parse(&printed) {
        Ok(again) => assert_eq!(q, again, "{text:?} printed as {printed:?}"),
        Err(e) => panic!("{text:?} printed as {printed:?} does not parse: {e}"),
    }
    let json = serde_json::to_string(&q).unwrap_or_default();
    let back: Result<Quantity, _> = serde_json::from_str(&json);
    assert!(back.is_ok_and(|b| b == q), "{text:?} via JSON {json}");
}

/// Small limits for fuzzed images, so that one input costs milliseconds.
pub const IMAGE_LIMITS: Limits = Limits {
    max_unpacked_bytes: 4 << 20,
    max_entries: 2_000,
    max_path_len: 4096,
};

/// Image tarballs. The first byte chooses the path: even, the bytes after it
/// are a `docker save`/OCI archive imported into a temporary store; odd,
/// they are one raw layer (tar, or gzip'd tar) unpacked into a temporary
/// directory (the import checks layer digests, which random mutation almost
/// never gets right, so this reaches the unpacker directly). Tar header
/// checksums are recomputed first for the same reason. In both cases a
/// sentinel directory next to the store must be left exactly as it was.
pub fn fuzz_image(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    fix_tar_checksums(&mut bytes);
    let Ok(t) = tempfile::tempdir() else {
        return;
    };
    let host = t.path().join("host");
    let before = sentinel(&host);
    if mode & 1 == 0 {
        let archive = t.path().join("in.tar");
        if fs::File::create(&archive)
            .and_then(|mut f| f.write_all(&bytes))
            .is_err()
        {
            return;
        }
        let Ok(store) = ImageStore::open(t.path().join("store")) else {
            return;
        };
        let store = store.with_limits(IMAGE_LIMITS);
        if let Ok(refs) = store.import(&archive, None) {
            for r in refs {
                // What was imported resolves.
                if let Err(e) = store.resolve(&r.name) {
                    panic!("imported {} does not resolve: {e}", r.name);
                }
            }
        }
    } else {
        let dest = t.path().join("layer");
        if fs::create_dir(&dest).is_err() {
            return;
        }
        let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let _ = shoal_image::layer::unpack_layer_with(
            reader,
            &dest,
            "fuzz",
            &mut Budget::new(IMAGE_LIMITS),
        );
    }
    assert_eq!(
        before,
        sentinel(&host),
        "the sentinel outside the store changed"
    );
    // Nothing appeared next to the store, the archive and the sentinel.
    if let Ok(rd) = fs::read_dir(t.path()) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            assert!(
                ["host", "in.tar", "store", "layer"].contains(&name.as_ref()),
                "unexpected {name} next to the store"
            );
        }
    }
}

/// Makes (when missing) and describes the sentinel directory: a file, a
/// subdirectory, their modes, contents and link counts.
fn sentinel(host: &Path) -> Vec<(String, u32, u64, Vec<u8>)> {
    if !host.exists() {
        let _ = fs::create_dir_all(host.join("etc"));
        let _ = fs::write(host.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n");
    }
    let mut out = Vec::new();
    for p in ["", "etc", "etc/passwd"] {
        let path = host.join(p);
        match fs::symlink_metadata(&path) {
            Ok(m) => out.push((
                p.to_string(),
                m.mode(),
                m.nlink(),
                if m.is_file() {
                    fs::read(&path).unwrap_or_default()
                } else {
                    Vec::new()
                },
            )),
            Err(e) => out.push((p.to_string(), 0, 0, e.to_string().into_bytes())),
        }
    }
    out
}

/// Rewrites the checksum of every tar header found by walking `data` from
/// its start (header, then the entry's data rounded up to 512 bytes); stops
/// at the first block whose size field is not octal.
pub fn fix_tar_checksums(data: &mut [u8]) {
    let mut off = 0usize;
    while off + 512 <= data.len() {
        let block = &mut data[off..off + 512];
        if block.iter().all(|&b| b == 0) {
            off += 512;
            continue;
        }
        let size_field = &block[124..136];
        let text: String = size_field
            .iter()
            .take_while(|&&b| b != 0 && b != b' ')
            .map(|&b| b as char)
            .collect();
        let Ok(size) = u64::from_str_radix(text.trim(), 8) else {
            return;
        };
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(field.as_bytes());
        let Some(next) = size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| off.checked_add(512)?.checked_add(s))
        else {
            return;
        };
        off = next;
    }
}

/// The zone the DNS target answers for.
pub const DNS_ZONE: &str = "shoal.local";

/// Node DNS: one wire-format query answered from a small table (the path
/// every pod's resolver reaches). The first byte chooses UDP (odd) or TCP
/// framing limits. Any reply must parse as a DNS message, carry the
/// query's id, and fit the UDP limit when asked over UDP.
pub fn fuzz_dns(data: &[u8]) {
    let Some((&mode, query)) = data.split_first() else {
        return;
    };
    let table = DnsTable::new();
    let mut records = HashMap::new();
    records.insert(
        format!("web.default.svc.{DNS_ZONE}"),
        vec![Ipv4Addr::new(10, 96, 0, 10)],
    );
    records.insert(
        format!("many.default.svc.{DNS_ZONE}"),
        (0..200).map(|i| Ipv4Addr::new(10, 97, 0, i)).collect(),
    );
    table.replace(records);
    let udp = mode & 1 == 1;
    let Some(reply) = shoal_net::dns::answer(query, DNS_ZONE, &table, udp) else {
        return;
    };
    let parsed = match Message::from_vec(&reply) {
        Ok(m) => m,
        Err(e) => panic!("reply {reply:?} does not parse: {e}"),
    };
    assert_eq!(
        parsed.id(),
        u16::from_be_bytes([query[0], query[1]]),
        "reply id"
    );
    if udp {
        assert!(reply.len() <= 4096, "UDP reply of {} bytes", reply.len());
    }
}
