//! Window audio → one stereo signal: linear cross-fade over the overlap
//! (spec §4.8), then crop.

/// Decoded audio, planar (channel-major): all samples of channel 0, then channel 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Number of channels (2 for HeartCodec).
    pub channels: u16,
    /// Samples per second.
    pub sample_rate: u32,
    /// `channels × frames` samples, channel-major.
    pub samples: Vec<f32>,
}

impl Audio {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// The samples of channel `c`.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.frames();
        &self.samples[c * n..(c + 1) * n]
    }

    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate)
    }
}

/// Accumulates window audio with upstream's cross-fade: for overlap sample `j`,
/// `out = out·(1 − w_j) + new·w_j` with `w = linspace(0, 1, overlap)` in f64,
/// stored as f32; the rest of each new window is appended.
#[derive(Debug, Clone)]
pub struct Assembler {
    channels: Vec<Vec<f32>>,
    overlap: usize,
}

impl Assembler {
    /// An empty signal of `channels` channels; consecutive windows share `overlap` samples.
    pub fn new(channels: usize, overlap: usize) -> Self {
        Self {
            channels: vec![Vec::new(); channels],
            overlap,
        }
    }

    /// Appends one window given planar `[channels, window_len]`
    /// (`window_len >= overlap`).
    pub fn push(&mut self, window: &[f32]) {
        let n = window.len() / self.channels.len();
        let first = self.channels[0].is_empty();
        for (c, out) in self.channels.iter_mut().enumerate() {
            let cur = &window[c * n..(c + 1) * n];
            if first {
                out.extend_from_slice(cur);
                continue;
            }
            let start = out.len() - self.overlap;
            for (j, (o, &s)) in out[start..].iter_mut().zip(cur).enumerate() {
                let w = super::geometry::crossfade_weight(j, self.overlap);
                *o = (f64::from(*o) * (1.0 - w) + f64::from(s) * w) as f32;
            }
            out.extend_from_slice(&cur[self.overlap..]);
        }
    }

    /// Samples per channel assembled so far.
    pub fn len(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Whether no window was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `range` of every channel, channel-major (`range` within [`Assembler::len`]).
    pub fn range(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        self.channels
            .iter()
            .flat_map(|ch| ch[range.clone()].iter().copied())
            .collect()
    }

    /// The signal cropped to at most `target_len` samples per channel.
    pub fn finish(self, target_len: usize, sample_rate: u32) -> Audio {
        let channels = u16::try_from(self.channels.len()).unwrap_or(u16::MAX);
        let samples = self
            .channels
            .into_iter()
            .flat_map(|mut ch| {
                ch.truncate(target_len);
                ch
            })
            .collect();
        Audio {
            channels,
            sample_rate,
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossfade_blends_linearly_and_crops() {
        let mut a = Assembler::new(2, 3);
        a.push(&[1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
        a.push(&[0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 6.0]);
        let audio = a.finish(6, 10);
        assert_eq!(audio.frames(), 6);
        assert_eq!(audio.channel(0), &[1.0, 1.0, 1.0, 0.5, 0.0, 5.0]);
        assert_eq!(audio.channel(1), &[2.0, 2.0, 2.0, 1.0, 0.0, 6.0]);
        assert_eq!(audio.seconds(), 0.6);
    }
}
