//! Registering an image whose blobs were fetched one by one (from the
//! controllers) with [`ImageStore::import_blob`]: the manifest, its config
//! and its layer blobs are all in the store; the layers are unpacked and
//! verified exactly as `import` does, then the names are recorded.

use std::fs;

use super::config::{ImageConfig, Manifest};
use super::{Image, ImageError, ImageStore, io_err, layer, normalize_reference, open_maybe_gzip};
use crate::digest::{Digest, HashingReader};

impl ImageStore {
    /// Registers the image with manifest `manifest` (whose blobs must all be
    /// present) under `names` (`busybox` → `busybox:latest`): unpacks layers
    /// not unpacked yet, checks them against the config's `diff_ids`, and
    /// records the names. Nothing is recorded unless everything verified.
    pub fn register_pulled(
        &self,
        manifest: &Digest,
        names: &[String],
    ) -> Result<Image, ImageError> {
        let missing = |d: &Digest, what: &str| ImageError::Format {
            archive: format!("image {manifest}"),
            message: format!("{what} blob {d} is not in the store"),
        };
        if !self.has_blob(manifest) {
            return Err(missing(manifest, "manifest"));
        }
        let m: Manifest = self.read_manifest(manifest)?;
        if !self.has_blob(&m.config.digest) {
            return Err(missing(&m.config.digest, "config"));
        }
        let cp = self.blob_path(&m.config.digest);
        let cfg_bytes = fs::read(&cp).map_err(|e| io_err(&cp, e))?;
        let cfg = ImageConfig::parse(&cfg_bytes).map_err(|e| ImageError::Format {
            archive: format!("image {manifest}"),
            message: format!("image config {}: {e}", m.config.digest),
        })?;
        if !cfg.diff_ids.is_empty() && cfg.diff_ids.len() != m.layers.len() {
            return Err(ImageError::Format {
                archive: format!("image {manifest}"),
                message: format!(
                    "config lists {} diff_ids for {} layers",
                    cfg.diff_ids.len(),
                    m.layers.len()
                ),
            });
        }
        let staging = self.staging_dir("pull")?;
        let result = (|| {
            let mut new_layers: Vec<(std::path::PathBuf, Digest)> = Vec::new();
            let mut budget = crate::limits::Budget::new(self.limits());
            for (i, l) in m.layers.iter().enumerate() {
                if !self.has_blob(&l.digest) {
                    return Err(missing(&l.digest, "layer"));
                }
                if self.layer_dir(&l.digest).is_dir()
                    || new_layers.iter().any(|(_, d)| d == &l.digest)
                {
                    continue;
                }
                let dest = staging.join("layers").join(l.digest.hex());
                fs::create_dir_all(&dest).map_err(|e| io_err(&dest, e))?;
                let src = self.blob_path(&l.digest);
                let (stream, _) = open_maybe_gzip(&src)?;
                let mut hr = HashingReader::new(stream);
                layer::unpack_layer_with(
                    &mut hr,
                    &dest,
                    &format!("{} of {manifest}", l.digest),
                    &mut budget,
                )?;
                let diff_id = hr.finish().map_err(|e| io_err(&src, e))?;
                if let Some(expected) = cfg.diff_ids.get(i)
                    && expected != &diff_id
                {
                    return Err(ImageError::DigestMismatch {
                        what: format!("layer {} (uncompressed)", l.digest),
                        expected: expected.clone(),
                        actual: diff_id,
                    });
                }
                new_layers.push((dest, l.digest.clone()));
            }
            let names: Vec<String> = names
                .iter()
                .map(|n| normalize_reference(n))
                .collect::<Result<_, _>>()?;
            let _lock = self.lock()?;
            for (dir, d) in new_layers {
                let dst = self.layer_dir(&d);
                if !dst.exists() {
                    fs::rename(&dir, &dst).map_err(|e| io_err(&dst, e))?;
                }
            }
            let mut refs = self.read_refs()?;
            refs.refs.insert(manifest.to_string(), manifest.clone());
            for n in names {
                if !n.starts_with("sha256:") {
                    refs.refs.insert(n, manifest.clone());
                }
            }
            self.write_refs(&refs)
        })();
        let _ = fs::remove_dir_all(&staging);
        result?;
        self.load(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Descriptor;

    fn layer_tar(path: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
        b.into_inner().unwrap()
    }

    fn desc(d: &Digest, size: usize) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: d.clone(),
            size: size as u64,
            platform: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn registers_an_image_from_blobs_and_rejects_missing_or_wrong_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path().join("images")).unwrap();
        let layer = layer_tar("hello.txt", b"hi\n");
        let ld = Digest::of_bytes(&layer);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [ld.to_string()]}
        })
        .to_string()
        .into_bytes();
        let cd = Digest::of_bytes(&config);
        let manifest = serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: String::new(),
            config: desc(&cd, config.len()),
            layers: vec![desc(&ld, layer.len())],
        })
        .unwrap();
        let md = Digest::of_bytes(&manifest);
        store.import_blob(&md, &mut &manifest[..]).unwrap();
        store.import_blob(&cd, &mut &config[..]).unwrap();
        // The layer is missing: nothing is registered.
        let e = store.register_pulled(&md, &["hello".into()]).unwrap_err();
        assert!(e.to_string().contains("layer blob"), "{e}");
        assert!(store.resolve("hello").is_err());
        store.import_blob(&ld, &mut &layer[..]).unwrap();
        let img = store.register_pulled(&md, &["hello".into()]).unwrap();
        assert_eq!(img.digest, md);
        assert_eq!(img.config.cmd, vec!["/hello".to_string()]);
        assert_eq!(
            fs::read(img.layer_dirs[0].join("hello.txt")).unwrap(),
            b"hi\n"
        );
        assert_eq!(store.resolve("hello:latest").unwrap().digest, md);
        assert_eq!(store.resolve(&md.to_string()).unwrap().digest, md);
        // Registering again (another name) reuses the unpacked layer.
        store.register_pulled(&md, &["other:1".into()]).unwrap();
        assert_eq!(store.resolve("other:1").unwrap().digest, md);
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }
}
