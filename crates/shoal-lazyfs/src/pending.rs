//! What one file holds in the "volatile write cache": writes and truncates not yet
//! fsynced, as a pure model over the backing file's bytes (no I/O here).
//!
//! The file's current contents are the backing file's bytes below [`Pending::base_limit`]
//! (zeros above), overlaid with the written extents, cut at [`Pending::size`]. A truncate
//! lowers the limit (what was beyond it is gone, and reads as zeros if the file grows
//! again); a write replaces the bytes it covers. Extents never overlap and never reach past
//! `size`, so applying them is: shorten the backing file to the limit, write every extent,
//! set the length to `size`.

use std::collections::BTreeMap;

/// The unsynced writes and truncates of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The file's current size (backing size with the pending changes applied).
    pub size: u64,
    /// Backing bytes at or beyond this offset are gone (a pending truncate below them).
    pub base_limit: u64,
    /// Written data by offset; non-overlapping, each within `0..size`.
    extents: BTreeMap<u64, Vec<u8>>,
}

impl Pending {
    /// Nothing pending over a backing file of `backing_size` bytes.
    pub fn new(backing_size: u64) -> Pending {
        Pending {
            size: backing_size,
            base_limit: backing_size,
            extents: BTreeMap::new(),
        }
    }

    /// Bytes held in memory (what a power cut drops).
    pub fn bytes(&self) -> u64 {
        self.extents.values().map(|v| v.len() as u64).sum()
    }

    /// The written extents, in offset order.
    pub fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.extents.iter().map(|(o, d)| (*o, d.as_slice()))
    }

    /// Removes every extent's bytes in `from..to`, keeping the parts outside it.
    fn punch(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        // An extent that starts before `from` may reach into the range.
        let first = self.extents.range(..from).next_back().map(|(o, _)| *o);
        let hit: Vec<u64> = first
            .into_iter()
            .chain(self.extents.range(from..to).map(|(o, _)| *o))
            .collect();
        for off in hit {
            let Some(data) = self.extents.remove(&off) else {
                continue;
            };
            let end = off + data.len() as u64;
            if end <= from {
                self.extents.insert(off, data);
                continue;
            }
            if off < from {
                self.extents
                    .insert(off, data[..(from - off) as usize].to_vec());
            }
            if end > to {
                self.extents
                    .insert(to, data[(to - off) as usize..].to_vec());
            }
        }
    }

    /// A write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.punch(offset, end);
        self.extents.insert(offset, data.to_vec());
        self.size = self.size.max(end);
    }

    /// A truncate (or extension) to `size` bytes.
    pub fn truncate(&mut self, size: u64) {
        self.punch(size, u64::MAX);
        self.base_limit = self.base_limit.min(size);
        self.size = size;
    }

    /// The bytes at `offset..offset + len` (shorter at the end of the file), given
    /// `backing(offset, len)`, which reads the backing file there (shorter at its end).
    pub fn read(
        &self,
        offset: u64,
        len: u64,
        backing: impl FnOnce(u64, u64) -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let base_end = end.min(self.base_limit);
        if offset < base_end {
            let base = backing(offset, base_end - offset)?;
            let n = base.len().min(out.len());
            out[..n].copy_from_slice(&base[..n]);
        }
        let first = self.extents.range(..offset).next_back().map(|(o, _)| *o);
        let starts: Vec<u64> = first
            .into_iter()
            .chain(self.extents.range(offset..end).map(|(o, _)| *o))
            .collect();
        for off in starts {
            let data = &self.extents[&off];
            let (from, to) = (off.max(offset), (off + data.len() as u64).min(end));
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `0..size` over `base` as a file would.
    fn contents(p: &Pending, base: &[u8]) -> Vec<u8> {
        p.read(0, u64::MAX, |o, l| {
            let o = (o as usize).min(base.len());
            let e = (o + l as usize).min(base.len());
            Ok(base[o..e].to_vec())
        })
        .expect("read")
    }

    /// Applies `p` to `base` the way the file system applies it on fsync.
    fn apply(p: &Pending, base: &[u8]) -> Vec<u8> {
        let mut f = base.to_vec();
        f.truncate(p.base_limit as usize);
        for (o, d) in p.extents() {
            let end = o as usize + d.len();
            if f.len() < end {
                f.resize(end, 0);
            }
            f[o as usize..end].copy_from_slice(d);
        }
        f.resize(p.size as usize, 0);
        f
    }

    #[test]
    fn writes_overlay_the_backing_bytes_and_grow_the_file() {
        let base = b"0123456789";
        let mut p = Pending::new(10);
        p.write(2, b"ab");
        p.write(12, b"xy");
        assert_eq!(p.size, 14);
        assert_eq!(contents(&p, base), b"01ab456789\0\0xy");
        assert_eq!(apply(&p, base), contents(&p, base));
        assert_eq!(p.bytes(), 4);
    }

    #[test]
    fn overlapping_writes_keep_the_latest_bytes() {
        let mut p = Pending::new(0);
        p.write(0, b"aaaaaaaa");
        p.write(2, b"bb");
        p.write(6, b"cccc");
        p.write(1, b"d");
        assert_eq!(contents(&p, b""), b"adbbaacccc");
        assert_eq!(p.extents().count(), 5);
        assert_eq!(p.bytes(), 10);
        p.write(0, b"eeeeeeeeeeee");
        assert_eq!(contents(&p, b""), b"eeeeeeeeeeee");
        assert_eq!(p.extents().count(), 1);
    }

    #[test]
    fn a_truncate_drops_the_bytes_beyond_it_and_later_growth_reads_zeros() {
        let base = b"0123456789";
        let mut p = Pending::new(10);
        p.write(6, b"abcd");
        p.truncate(4);
        assert_eq!(contents(&p, base), b"0123");
        p.write(6, b"z");
        assert_eq!(contents(&p, base), b"0123\0\0z");
        assert_eq!(apply(&p, base), b"0123\0\0z");
        p.truncate(9);
        assert_eq!(contents(&p, base), b"0123\0\0z\0\0");
        assert_eq!(apply(&p, base), contents(&p, base));
    }

    #[test]
    fn reads_of_a_window_merge_base_and_extents() {
        let base = b"0123456789";
        let mut p = Pending::new(10);
        p.write(3, b"abc");
        let r = p
            .read(4, 4, |o, l| Ok(base[o as usize..(o + l) as usize].to_vec()))
            .expect("read");
        assert_eq!(r, b"bc67");
        let past = p.read(20, 4, |_, _| panic!("no backing read past the end"));
        assert_eq!(past.expect("read"), b"");
    }

    #[test]
    fn apply_matches_contents_for_a_mixed_history() {
        let base: Vec<u8> = (0..64u8).collect();
        let mut p = Pending::new(64);
        let ops: [(u64, &[u8], Option<u64>); 7] = [
            (10, b"xxxxxxxx", None),
            (0, b"", Some(30)),
            (28, b"yyyyyy", None),
            (5, b"zz", None),
            (0, b"", Some(70)),
            (66, b"w", None),
            (0, b"", Some(31)),
        ];
        for (o, d, t) in ops {
            match t {
                Some(s) => p.truncate(s),
                None => p.write(o, d),
            }
            assert_eq!(apply(&p, &base), contents(&p, &base));
        }
        assert_eq!(p.size, 31);
    }
}
