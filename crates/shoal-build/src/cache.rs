//! The bound on the build cache: which images to drop, least recently used first, so that
//! the layers the remaining images use take no more than the limit. Pure: the agent
//! measures the layers, records the uses and removes what this returns.
//!
//! Why images and not layers: an image (a step's result, or a FROM image) is what a
//! cache lookup finds; a layer shared by several images (every step's parent layers)
//! is freed only when the last image that uses it goes, which is what the union below
//! counts. Dropping a parent step keeps its children valid (they carry the parent's
//! layers); the next build that needs the parent rebuilds it from its own parent.

use std::collections::{BTreeMap, BTreeSet};

/// One image in the build store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedImage {
    /// Its manifest digest (what is returned to drop it).
    pub id: String,
    /// When it was last built or found by a lookup: a sequence number, higher is later;
    /// 0 for an image with no recorded use.
    pub last_use: u64,
    /// The layer blobs it uses (digests).
    pub layers: Vec<String>,
}

/// Bytes on disk of the union of the layers of `images` (unknown layers count 0).
pub fn size<'a>(
    images: impl IntoIterator<Item = &'a CachedImage>,
    layer_bytes: &BTreeMap<String, u64>,
) -> u64 {
    let layers: BTreeSet<&str> = images
        .into_iter()
        .flat_map(|i| i.layers.iter().map(String::as_str))
        .collect();
    layers
        .iter()
        .map(|l| layer_bytes.get(*l).copied().unwrap_or(0))
        .sum()
}

/// The images to drop, in order (least recently used first; ties by id), until what is
/// left takes at most `limit` bytes. Empty when the cache fits; every image when even
/// the most recent one alone does not fit.
pub fn evict(
    images: &[CachedImage],
    layer_bytes: &BTreeMap<String, u64>,
    limit: u64,
) -> Vec<String> {
    let mut order: Vec<&CachedImage> = images.iter().collect();
    order.sort_by(|a, b| (a.last_use, &a.id).cmp(&(b.last_use, &b.id)));
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() && size(order[start..].iter().copied(), layer_bytes) > limit {
        out.push(order[start].id.clone());
        start += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, last_use: u64, layers: &[&str]) -> CachedImage {
        CachedImage {
            id: id.into(),
            last_use,
            layers: layers.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn bytes(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn shared_layers_count_once() {
        let b = bytes(&[("base", 100), ("a", 10), ("b", 20)]);
        let images = [img("A", 1, &["base", "a"]), img("B", 2, &["base", "b"])];
        assert_eq!(size(&images, &b), 130);
        assert_eq!(size(&images[..1], &b), 110);
    }

    #[test]
    fn least_recently_used_go_first_until_it_fits() {
        let b = bytes(&[("base", 100), ("a", 50), ("b", 50), ("c", 50)]);
        let images = [
            img("C", 7, &["base", "c"]),
            img("A", 3, &["base", "a"]),
            img("B", 5, &["base", "b"]),
            img("busybox", 7, &["base"]),
        ];
        // Everything fits.
        assert!(evict(&images, &b, 250).is_empty());
        // 250 > 200: A (oldest) goes; 200 fits.
        assert_eq!(evict(&images, &b, 200), ["A"]);
        // 150: B goes too; C and the base image are left.
        assert_eq!(evict(&images, &b, 150), ["A", "B"]);
        // Dropping C frees its layer; the base stays for the newest image that uses it.
        assert_eq!(evict(&images, &b, 100), ["A", "B", "C"]);
        assert_eq!(evict(&images, &b, 99), ["A", "B", "C", "busybox"]);
    }

    #[test]
    fn a_parent_step_shared_by_its_child_frees_nothing_alone() {
        // The parent's layers are all in the child: dropping the (older) parent first is
        // not enough, and the child must go as well to get under the limit.
        let b = bytes(&[("base", 100), ("p", 30), ("c", 30)]);
        let images = [
            img("parent", 1, &["base", "p"]),
            img("child", 2, &["base", "p", "c"]),
            img("base", 3, &["base"]),
        ];
        assert_eq!(evict(&images, &b, 150), ["parent", "child"]);
        // Unknown layers (not measured) count nothing; no record of use sorts first.
        let images = [img("x", 0, &["gone"]), img("y", 9, &["base"])];
        assert_eq!(evict(&images, &b, 100), Vec::<String>::new());
        assert_eq!(evict(&images, &b, 50), ["x", "y"]);
    }
}
