//! One table chunk, encoded exactly as HDF5's own filters would encode it.
//!
//! The table's filter pipeline is declared the way PyTables declares it
//! (shuffle, then deflate), so every HDF5 reader decodes the chunks with
//! its own filters. The writer does not run them through the library,
//! though: it shuffles and compresses each chunk here, with libdeflate
//! (about twice zlib's speed at the same level; measured in
//! docs/performance.md), and hands the bytes to `H5Dwrite_chunk`. What it
//! writes must therefore be what HDF5's filters write, byte for byte in
//! format:
//!
//! * **shuffle** (`H5Z_FILTER_SHUFFLE`): the element size is the dataset
//!   type's size, here one whole row, so the chunk (rows × row bytes) is
//!   transposed to (row bytes × rows): byte `b` of every row, then byte
//!   `b + 1` …;
//! * **deflate** (`H5Z_FILTER_DEFLATE`): a zlib stream (RFC 1950: header,
//!   DEFLATE data, Adler-32 of the shuffled bytes, which is what catches a
//!   damaged chunk on reading). HDF5 marks deflate optional: a chunk that
//!   does not shrink is stored shuffled only, its filter mask saying so,
//!   as the library itself does.
//!
//! A chunk is always encoded whole: rows past the ones given are zeros (the
//! table's fill value), as HDF5 pads a partly written chunk.
//!
//! A compressed chunk may be followed by zeros up to a length the caller
//! chooses (`room`): HDF5 moves a chunk rewritten at another length and
//! does not reuse the space it leaves, so a chunk that will be rewritten
//! (a partly filled one, written at a flush) is given room to grow in
//! place. HDF5's deflate filter inflates until the zlib stream ends and
//! ignores what follows it (H5Z_filter_deflate stops at Z_STREAM_END), so
//! every reader built on the library decodes such a chunk as any other.
//!
//! It owns its buffers, sized once per file; encoding allocates nothing.

use libdeflater::{CompressionLvl, Compressor};

/// Bit of the filter mask that says "deflate (the pipeline's second filter)
/// was not applied to this chunk".
const DEFLATE_SKIPPED: u32 = 1 << 1;

/// Encodes the chunks of one table.
pub(crate) struct ChunkEncoder {
    row_len: usize,
    rows: usize,
    /// None: no filters (compression off), chunks are the rows as they are.
    deflate: Option<Compressor>,
    shuffled: Vec<u8>,
    out: Vec<u8>,
}

impl ChunkEncoder {
    /// For chunks of `rows` rows of `row_len` bytes, deflate `level` 0..=9
    /// (0: no filters at all).
    pub(crate) fn new(row_len: usize, rows: usize, level: u8) -> ChunkEncoder {
        let bytes = row_len * rows;
        let deflate = (level > 0).then(|| {
            // libdeflate's levels 1..=9 are zlib's in intent (1 fastest);
            // it goes to 12, which this writer does not offer.
            let lvl = CompressionLvl::new(i32::from(level.min(9)))
                .expect("levels 1..=9 are valid libdeflate levels");
            Compressor::new(lvl)
        });
        ChunkEncoder {
            row_len,
            rows,
            shuffled: if deflate.is_some() {
                vec![0; bytes]
            } else {
                Vec::new()
            },
            // The compressed chunk (a chunk that does not fit is stored
            // shuffled only), or uncompressed, a partly filled chunk padded.
            out: vec![0; bytes],
            deflate,
        }
    }

    /// Bytes of one whole chunk, decoded.
    pub(crate) fn chunk_len(&self) -> usize {
        self.row_len * self.rows
    }

    /// Encodes `data` (whole rows, at most one chunk's) as one chunk:
    /// returns the filter mask for `H5Dwrite_chunk` and the bytes to write.
    /// A compressed chunk of `n` bytes is followed by zeros up to
    /// `room(n)` bytes (at least `n`, at most a chunk's decoded length);
    /// other encodings are a chunk's decoded length already.
    pub(crate) fn encode<'a>(
        &'a mut self,
        data: &'a [u8],
        room: impl FnOnce(usize) -> usize,
    ) -> (u32, &'a [u8]) {
        let (row_len, rows) = (self.row_len, self.rows);
        assert!(
            data.len() % row_len == 0 && data.len() <= self.chunk_len(),
            "whole rows, at most one chunk"
        );
        let Some(deflate) = self.deflate.as_mut() else {
            if data.len() == self.chunk_len() {
                return (0, data); // a full chunk is written as it is
            }
            self.out[..data.len()].copy_from_slice(data);
            self.out[data.len()..].fill(0);
            return (0, &self.out);
        };
        shuffle(data, row_len, rows, &mut self.shuffled);
        match deflate.zlib_compress(&self.shuffled, &mut self.out) {
            Ok(n) if n < self.shuffled.len() => {
                let len = room(n).clamp(n, self.out.len());
                self.out[n..len].fill(0);
                (0, &self.out[..len])
            }
            // It did not shrink (or did not fit in a chunk's room).
            _ => (DEFLATE_SKIPPED, &self.shuffled),
        }
    }
}

/// HDF5's shuffle of `data` (`n` rows of `row_len` bytes, the rest of a
/// `rows`-row chunk zeros) into `out`: `out[b * rows + r]` is byte `b` of row `r`.
fn shuffle(data: &[u8], row_len: usize, rows: usize, out: &mut [u8]) {
    let n = data.len() / row_len;
    debug_assert_eq!(out.len(), row_len * rows);
    for (b, col) in out.chunks_exact_mut(rows).enumerate() {
        let (filled, pad) = col.split_at_mut(n);
        for (o, row) in filled.iter_mut().zip(data.chunks_exact(row_len)) {
            *o = row[b];
        }
        pad.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse, as HDF5's reader applies it.
    fn unshuffle(s: &[u8], row_len: usize, rows: usize) -> Vec<u8> {
        let mut out = vec![0; s.len()];
        for r in 0..rows {
            for b in 0..row_len {
                out[r * row_len + b] = s[b * rows + r];
            }
        }
        out
    }

    fn rows(n: usize, row_len: usize) -> Vec<u8> {
        (0..n * row_len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn shuffle_transposes_rows_into_byte_planes_and_pads_with_zeros() {
        let (row_len, n, cap) = (5, 3, 4);
        let data = rows(n, row_len);
        let mut s = vec![0xAA; row_len * cap];
        shuffle(&data, row_len, cap, &mut s);
        assert_eq!(s[0..4], [data[0], data[5], data[10], 0]);
        let mut padded = data.clone();
        padded.resize(row_len * cap, 0);
        assert_eq!(unshuffle(&s, row_len, cap), padded);
    }

    #[test]
    fn a_compressed_chunk_inflates_to_the_shuffled_rows() {
        let (row_len, cap) = (24, 64);
        let data = {
            // Compressible: small counters, as event numbers and times are.
            let mut d = vec![0u8; 10 * row_len];
            for (i, r) in d.chunks_exact_mut(row_len).enumerate() {
                r[..8].copy_from_slice(&(i as u64).to_le_bytes());
            }
            d
        };
        let mut enc = ChunkEncoder::new(row_len, cap, 1);
        let (mask, bytes) = enc.encode(&data, |n| n);
        assert_eq!(mask, 0);
        assert!(bytes.len() < row_len * cap);
        let mut inflated = vec![0; row_len * cap];
        let n = libdeflater::Decompressor::new()
            .zlib_decompress(bytes, &mut inflated)
            .unwrap();
        assert_eq!(n, row_len * cap);
        let mut padded = data.clone();
        padded.resize(row_len * cap, 0);
        assert_eq!(unshuffle(&inflated, row_len, cap), padded);
    }

    #[test]
    fn a_chunk_that_does_not_shrink_is_stored_shuffled_with_deflate_marked_skipped() {
        let (row_len, cap) = (16, 8);
        // xorshift noise: deflate cannot shrink it.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..row_len * cap)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut enc = ChunkEncoder::new(row_len, cap, 9);
        let (mask, bytes) = enc.encode(&data, |n| n);
        assert_eq!(mask, DEFLATE_SKIPPED);
        assert_eq!(unshuffle(bytes, row_len, cap), data);
    }

    #[test]
    fn without_compression_a_chunk_is_the_rows_then_zeros() {
        let mut enc = ChunkEncoder::new(4, 3, 0);
        let (mask, bytes) = enc.encode(&[1, 2, 3, 4], |n| n);
        assert_eq!(
            (mask, bytes),
            (0, &[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0][..])
        );
    }
}
