//! The KV cache of one transformer stack, held by the runtime and bound to the
//! graph's `past_key_i` / `past_value_i` inputs by pointer (no copy per step).
//!
//! Layout per layer (the graph contract, see `heart::engine::io`): keys
//! `[B, KV, hd, C]` (stored transposed so the graph's `q·Kᵀ` is a plain MatMul),
//! values `[B, KV, C, hd]`, with `C` the current capacity. Positions `0..len` are
//! valid; the graph masks the rest through `attn_bias`, so stale entries after a
//! [`KvCache::truncate`] or [`KvCache::reset`] are harmless (they are always
//! finite: buffers start zeroed and only receive graph outputs).
//!
//! Attention cost is proportional to `C`, so the cache grows in steps of
//! [`GROW_STEP`] positions up to its maximum instead of starting at it; growing
//! copies the valid prefix once (amortised over `GROW_STEP` frames).

use half::f16;

use super::LmError;

/// Positions added per growth step.
pub const GROW_STEP: usize = 256;

/// Element type of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheDtype {
    /// f32 (fp32 engines).
    F32,
    /// f16 (fp16 engines).
    F16,
}

/// Dimensions of a cache (everything but the capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// Transformer layers.
    pub layers: usize,
    /// Batch rows (2 with CFG).
    pub batch: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
}

impl CacheShape {
    /// A layer's key buffer at `capacity` positions, `[B, KV, hd, C]`.
    pub fn key_dims(&self, capacity: usize) -> [usize; 4] {
        [self.batch, self.kv_heads, self.head_dim, capacity]
    }

    /// A layer's value buffer at `capacity` positions, `[B, KV, C, hd]`.
    pub fn value_dims(&self, capacity: usize) -> [usize; 4] {
        [self.batch, self.kv_heads, capacity, self.head_dim]
    }
}

/// Element types a cache can hold.
pub trait CacheElem: Copy + Default + 'static {
    /// The buffer of this type, if `buf` holds it.
    fn slice(buf: &Buf) -> Option<&Vec<Self>>;
    /// The mutable buffer of this type, if `buf` holds it.
    fn slice_mut(buf: &mut Buf) -> Option<&mut Vec<Self>>;
}

/// One layer's key or value storage.
#[derive(Debug, Clone)]
pub enum Buf {
    /// f32 storage.
    F32(Vec<f32>),
    /// f16 storage.
    F16(Vec<f16>),
}

impl CacheElem for f32 {
    fn slice(buf: &Buf) -> Option<&Vec<Self>> {
        match buf {
            Buf::F32(v) => Some(v),
            Buf::F16(_) => None,
        }
    }
    fn slice_mut(buf: &mut Buf) -> Option<&mut Vec<Self>> {
        match buf {
            Buf::F32(v) => Some(v),
            Buf::F16(_) => None,
        }
    }
}

impl CacheElem for f16 {
    fn slice(buf: &Buf) -> Option<&Vec<Self>> {
        match buf {
            Buf::F16(v) => Some(v),
            Buf::F32(_) => None,
        }
    }
    fn slice_mut(buf: &mut Buf) -> Option<&mut Vec<Self>> {
        match buf {
            Buf::F16(v) => Some(v),
            Buf::F32(_) => None,
        }
    }
}

impl Buf {
    fn zeros(dtype: CacheDtype, n: usize) -> Self {
        match dtype {
            CacheDtype::F32 => Self::F32(vec![0.0; n]),
            CacheDtype::F16 => Self::F16(vec![f16::ZERO; n]),
        }
    }
}

/// A preallocated, growable KV cache with an explicit length.
#[derive(Debug, Clone)]
pub struct KvCache {
    shape: CacheShape,
    dtype: CacheDtype,
    capacity: usize,
    max_capacity: usize,
    len: usize,
    keys: Vec<Buf>,
    values: Vec<Buf>,
}

impl KvCache {
    /// A cache of `capacity` positions that may grow up to `max_capacity`.
    pub fn new(shape: CacheShape, dtype: CacheDtype, capacity: usize, max_capacity: usize) -> Result<Self, LmError> {
        if capacity > max_capacity {
            return Err(LmError::CacheFull {
                needed: capacity,
                max: max_capacity,
            });
        }
        let n = shape.batch * shape.kv_heads * shape.head_dim * capacity;
        Ok(Self {
            shape,
            dtype,
            capacity,
            max_capacity,
            len: 0,
            keys: (0..shape.layers).map(|_| Buf::zeros(dtype, n)).collect(),
            values: (0..shape.layers).map(|_| Buf::zeros(dtype, n)).collect(),
        })
    }

    /// Dimensions.
    pub fn shape(&self) -> CacheShape {
        self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> CacheDtype {
        self.dtype
    }

    /// Valid positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is valid.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most positions the cache may ever hold.
    pub fn max_capacity(&self) -> usize {
        self.max_capacity
    }

    /// Forgets every position (the buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` positions (no-op if already shorter); used to
    /// roll back rejected speculative positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for `n` more positions, growing in steps of [`GROW_STEP`].
    pub fn reserve(&mut self, n: usize) -> Result<(), LmError> {
        let needed = self.len + n;
        if needed <= self.capacity {
            return Ok(());
        }
        if needed > self.max_capacity {
            return Err(LmError::CacheFull {
                needed,
                max: self.max_capacity,
            });
        }
        let new_cap = needed
            .div_ceil(GROW_STEP)
            .saturating_mul(GROW_STEP)
            .min(self.max_capacity);
        for buf in &mut self.keys {
            regrow(buf, self.shape, self.capacity, new_cap, self.len, true);
        }
        for buf in &mut self.values {
            regrow(buf, self.shape, self.capacity, new_cap, self.len, false);
        }
        self.capacity = new_cap;
        Ok(())
    }

    /// Positions of the next `s` rows (`len..len+s`).
    pub fn positions(&self, s: usize) -> Vec<i64> {
        (self.len..self.len + s).map(|p| p as i64).collect()
    }

    /// The `attn_bias` for `s` new rows: `[s, capacity + s]`, 0 where row `i` may
    /// attend (valid cache positions and new rows `<= i`), −inf elsewhere.
    pub fn attn_bias(&self, s: usize) -> Vec<f32> {
        let width = self.capacity + s;
        let mut bias = vec![f32::NEG_INFINITY; s * width];
        for (i, row) in bias.chunks_exact_mut(width).enumerate() {
            row[..self.len].fill(0.0);
            row[self.capacity..=self.capacity + i].fill(0.0);
        }
        bias
    }

    /// Shape of a layer's key buffer, `[B, KV, hd, C]`.
    pub fn key_dims(&self) -> [usize; 4] {
        self.shape.key_dims(self.capacity)
    }

    /// Shape of a layer's value buffer, `[B, KV, C, hd]`.
    pub fn value_dims(&self) -> [usize; 4] {
        self.shape.value_dims(self.capacity)
    }

    /// Layer `layer`'s key and value storage.
    pub fn layer(&self, layer: usize) -> (&Buf, &Buf) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Writes the graph's `new_key` `[B, KV, hd, s]` and `new_value`
    /// `[B, KV, s, hd]` of `layer` at positions `len..len+s`. Call
    /// [`Self::advance`] once every layer is written. Room must have been made
    /// with [`Self::reserve`].
    pub fn write<T: CacheElem>(&mut self, layer: usize, keys: &[T], values: &[T], s: usize) -> Result<(), LmError> {
        let sh = self.shape;
        let rows = sh.batch * sh.kv_heads;
        let expected = rows * sh.head_dim * s;
        let (cap, len) = (self.capacity, self.len);
        if keys.len() != expected || values.len() != expected || len + s > cap {
            return Err(LmError::Shape {
                what: format!("new keys/values of layer {layer}"),
                expected: format!("{expected} elements each, {s} positions after {len} (capacity {cap})"),
                got: format!("{} and {} elements", keys.len(), values.len()),
            });
        }
        let wrong_type = || LmError::Shape {
            what: format!("new keys/values of layer {layer}"),
            expected: format!("{:?} elements", self.dtype),
            got: "another element type".into(),
        };
        let kbuf = T::slice_mut(&mut self.keys[layer]).ok_or_else(wrong_type)?;
        for (r, src) in keys.chunks_exact(s).enumerate() {
            kbuf[r * cap + len..r * cap + len + s].copy_from_slice(src);
        }
        let vbuf = T::slice_mut(&mut self.values[layer]).ok_or_else(wrong_type)?;
        let hd = sh.head_dim;
        for (r, src) in values.chunks_exact(s * hd).enumerate() {
            vbuf[(r * cap + len) * hd..(r * cap + len + s) * hd].copy_from_slice(src);
        }
        Ok(())
    }

    /// Marks `s` more positions valid (after [`Self::write`] of every layer).
    pub fn advance(&mut self, s: usize) {
        self.len = (self.len + s).min(self.capacity);
    }
}

/// Reallocates one buffer from capacity `old` to `new`, keeping `len` positions.
fn regrow(buf: &mut Buf, sh: CacheShape, old: usize, new: usize, len: usize, keys: bool) {
    fn go<T: Copy + Default>(v: &mut Vec<T>, sh: CacheShape, old: usize, new: usize, len: usize, keys: bool) {
        let heads = sh.batch * sh.kv_heads;
        let mut out = vec![T::default(); heads * sh.head_dim * new];
        if keys {
            // Rows of C positions, one per (b, kv, d).
            for r in 0..heads * sh.head_dim {
                out[r * new..r * new + len].copy_from_slice(&v[r * old..r * old + len]);
            }
        } else {
            // Blocks of C x hd, one per (b, kv).
            let hd = sh.head_dim;
            for r in 0..heads {
                out[r * new * hd..(r * new + len) * hd].copy_from_slice(&v[r * old * hd..(r * old + len) * hd]);
            }
        }
        *v = out;
    }
    match buf {
        Buf::F32(v) => go(v, sh, old, new, len, keys),
        Buf::F16(v) => go(v, sh, old, new, len, keys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: CacheShape = CacheShape {
        layers: 1,
        batch: 2,
        kv_heads: 1,
        head_dim: 2,
    };

    /// New positions `s` with values `base + (row, d or position)` so every
    /// element is distinguishable.
    fn step(cache: &mut KvCache, s: usize, base: f32) {
        cache.reserve(s).unwrap();
        let n = SHAPE.batch * SHAPE.kv_heads * SHAPE.head_dim * s;
        let new: Vec<f32> = (0..n).map(|i| base + i as f32).collect();
        cache.write(0, &new, &new, s).unwrap();
        cache.advance(s);
    }

    fn keys(cache: &KvCache) -> &[f32] {
        f32::slice(cache.layer(0).0).unwrap()
    }

    #[test]
    fn writes_land_at_the_current_length_in_both_layouts() {
        let mut c = KvCache::new(SHAPE, CacheDtype::F32, 4, 4).unwrap();
        step(&mut c, 2, 0.0);
        step(&mut c, 1, 100.0);
        assert_eq!(c.len(), 3);
        // Keys [B, KV, hd, C]: row (b, d) holds positions 0..C.
        assert_eq!(&keys(&c)[..4], &[0.0, 1.0, 100.0, 0.0]);
        assert_eq!(&keys(&c)[4..8], &[2.0, 3.0, 101.0, 0.0]);
        // Values [B, KV, C, hd]: batch row 1 starts at C * hd = 8.
        let v = f32::slice(c.layer(0).1).unwrap();
        assert_eq!(&v[8..14], &[4.0, 5.0, 6.0, 7.0, 102.0, 103.0]);
    }

    #[test]
    fn attention_bias_masks_unused_capacity_and_future_rows() {
        let mut c = KvCache::new(SHAPE, CacheDtype::F32, 4, 4).unwrap();
        step(&mut c, 1, 0.0);
        let b = c.attn_bias(2);
        let z = 0.0;
        let m = f32::NEG_INFINITY;
        assert_eq!(b, vec![z, m, m, m, z, m, z, m, m, m, z, z]);
        assert_eq!(c.positions(2), vec![1, 2]);
    }

    #[test]
    fn growth_keeps_the_prefix_and_stops_at_the_maximum() {
        let mut c = KvCache::new(SHAPE, CacheDtype::F32, 0, GROW_STEP + 10).unwrap();
        step(&mut c, 3, 0.0);
        assert_eq!(c.capacity(), GROW_STEP);
        let before: Vec<f32> = (0..4)
            .flat_map(|r| keys(&c)[r * GROW_STEP..r * GROW_STEP + 3].to_vec())
            .collect();
        step(&mut c, GROW_STEP - 3, 1000.0);
        step(&mut c, 1, 5000.0);
        assert_eq!(c.capacity(), GROW_STEP + 10);
        let cap = c.capacity();
        let after: Vec<f32> = (0..4).flat_map(|r| keys(&c)[r * cap..r * cap + 3].to_vec()).collect();
        assert_eq!(before, after);
        assert!(matches!(
            c.reserve(10),
            Err(LmError::CacheFull { needed: 267, max: 266 })
        ));
    }

    #[test]
    fn truncate_and_reset_only_move_the_length() {
        let mut c = KvCache::new(SHAPE, CacheDtype::F32, 8, 8).unwrap();
        step(&mut c, 5, 0.0);
        c.truncate(7);
        assert_eq!(c.len(), 5);
        c.truncate(2);
        assert_eq!(c.len(), 2);
        step(&mut c, 1, 50.0);
        assert_eq!(
            &keys(&c)[..4],
            &[0.0, 1.0, 50.0, 3.0],
            "position 2 overwritten, 3 stale but masked"
        );
        c.reset();
        assert!(c.is_empty());
    }

    #[test]
    fn wrong_sizes_and_types_are_errors() {
        let mut c = KvCache::new(SHAPE, CacheDtype::F16, 2, 2).unwrap();
        assert!(
            c.write(0, &[0f32; 4], &[0f32; 4], 1)
                .unwrap_err()
                .to_string()
                .contains("F16")
        );
        assert!(c.write(0, &[f16::ZERO; 3], &[f16::ZERO; 4], 1).is_err());
        assert!(
            c.write(0, &[f16::ZERO; 12], &[f16::ZERO; 12], 3).is_err(),
            "past the capacity"
        );
        assert!(KvCache::new(SHAPE, CacheDtype::F32, 5, 4).is_err());
    }
}
