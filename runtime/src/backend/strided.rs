//! Geometry of appending a step's new keys/values to a cache that lives in
//! device memory: each is one pitched 2-D copy (`cuMemcpy2D`), so the device
//! cache ([`super::device_kv`], feature `gpu`) needs no kernel of its own.
//!
//! Kept apart from the GPU code so the arithmetic is tested everywhere, against
//! the host cache's own [`KvCache::write`](crate::lm::kv_cache::KvCache::write).

use crate::lm::kv_cache::CacheShape;

/// One pitched 2-D copy: `rows` rows of `width` bytes, row `r` read at
/// `r * src_pitch` and written at `dst_offset + r * dst_pitch` (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy2d {
    /// Rows.
    pub rows: usize,
    /// Bytes per row.
    pub width: usize,
    /// Source row stride in bytes.
    pub src_pitch: usize,
    /// Destination row stride in bytes.
    pub dst_pitch: usize,
    /// Destination byte offset of the first row.
    pub dst_offset: usize,
}

/// The copies that append `s` positions at position `len` of a cache of
/// `capacity` positions with `elem`-byte elements: keys `[B, KV, hd, s]` into
/// `[B, KV, hd, C]`, values `[B, KV, s, hd]` into `[B, KV, C, hd]`.
pub fn append_copies(shape: CacheShape, elem: usize, capacity: usize, len: usize, s: usize) -> (Copy2d, Copy2d) {
    let heads = shape.batch * shape.kv_heads;
    let hd = shape.head_dim;
    let keys = Copy2d {
        rows: heads * hd,
        width: s * elem,
        src_pitch: s * elem,
        dst_pitch: capacity * elem,
        dst_offset: len * elem,
    };
    let values = Copy2d {
        rows: heads,
        width: s * hd * elem,
        src_pitch: s * hd * elem,
        dst_pitch: capacity * hd * elem,
        dst_offset: len * hd * elem,
    };
    (keys, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::kv_cache::{CacheDtype, CacheElem, KvCache};

    /// What `cuMemcpy2D` does, on host byte buffers.
    fn emulate(c: Copy2d, src: &[u8], dst: &mut [u8]) {
        for r in 0..c.rows {
            let from = r * c.src_pitch;
            let to = c.dst_offset + r * c.dst_pitch;
            dst[to..to + c.width].copy_from_slice(&src[from..from + c.width]);
        }
    }

    #[test]
    fn pitched_copies_append_exactly_like_the_host_cache() {
        let shape = CacheShape {
            layers: 1,
            batch: 2,
            kv_heads: 3,
            head_dim: 4,
        };
        let capacity = 7;
        let mut host = KvCache::new(shape, CacheDtype::F32, capacity, capacity).unwrap();
        let n = |s: usize| shape.batch * shape.kv_heads * shape.head_dim * s;
        let mut dev_k = vec![0f32; n(capacity)];
        let mut dev_v = vec![0f32; n(capacity)];
        let mut base = 1.0f32;
        for s in [3usize, 1, 2] {
            let new_k: Vec<f32> = (0..n(s)).map(|i| base + i as f32).collect();
            let new_v: Vec<f32> = new_k.iter().map(|x| -x).collect();
            let (ck, cv) = append_copies(shape, 4, capacity, host.len(), s);
            emulate(ck, bytemuck::cast_slice(&new_k), bytemuck::cast_slice_mut(&mut dev_k));
            emulate(cv, bytemuck::cast_slice(&new_v), bytemuck::cast_slice_mut(&mut dev_v));
            host.write(0, &new_k, &new_v, s).unwrap();
            host.advance(s);
            base += 1000.0;
        }
        let (hk, hv) = host.layer(0);
        assert_eq!(&dev_k, f32::slice(hk).unwrap());
        assert_eq!(&dev_v, f32::slice(hv).unwrap());
    }
}
