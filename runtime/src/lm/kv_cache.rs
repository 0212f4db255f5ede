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
        let s = self.shape;
        [s.batch, s.kv_heads, s.head_dim, self.capacity]
    }

    /// Shape of a layer's value buffer, `[B, KV, C, hd]`.
    pub fn value_dims(&self) -> [usize; 4] {
        let s = self.shape;
        [s.batch, s.kv_heads, self.capacity, s.head_dim]
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
