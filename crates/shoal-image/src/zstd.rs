//! Reading zstd-compressed layers (`application/vnd.oci.image.layer.v1.tar+zstd`) with
//! ruzstd, a pure-Rust decoder: every frame of the stream in turn, skippable frames (the
//! table of contents of `zstd:chunked` layers) skipped.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The zstd frame magic number, as the first four bytes of a stream.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A reader of every frame of a zstd stream.
pub struct ZstdReader<R> {
    src: R,
    dec: FrameDecoder,
    in_frame: bool,
}

impl<R> std::fmt::Debug for ZstdReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdReader")
            .field("in_frame", &self.in_frame)
            .finish()
    }
}

impl<R: BufRead> ZstdReader<R> {
    /// Decodes `src`.
    pub fn new(src: R) -> Self {
        Self {
            src,
            dec: FrameDecoder::new(),
            in_frame: false,
        }
    }
}

fn zstd_err(e: FrameDecoderError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                if self.dec.can_collect() > 0 {
                    return self.dec.read(buf);
                }
                if self.dec.is_finished() {
                    self.in_frame = false;
                    continue;
                }
                self.dec
                    .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBytes(buf.len()))
                    .map_err(zstd_err)?;
                continue;
            }
            if self.src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.dec.reset(&mut self.src) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.src).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd: truncated skippable frame",
                        ));
                    }
                }
                Err(e) => return Err(zstd_err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_frame_and_skips_skippable_ones() {
        // Two frames (ruzstd's encoder) of "hello " and "world\n", with a skippable
        // frame between them.
        let one = ruzstd::encoding::compress_to_vec(
            &b"hello "[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let two = ruzstd::encoding::compress_to_vec(
            &b"world\n"[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut data = one.clone();
        data.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        data.extend_from_slice(&two);
        let mut out = String::new();
        ZstdReader::new(&data[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world\n");
        assert_eq!(&one[..4], &MAGIC);
        let mut bad = one.clone();
        bad.truncate(bad.len() - 2);
        assert!(
            ZstdReader::new(&bad[..])
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }
}
