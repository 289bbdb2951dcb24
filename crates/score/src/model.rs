//! Logistic regression over hashed features, trained online with
//! FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the
//! Trenches", 2013). The per-coordinate learning rates and L1 shrinkage
//! keep it sparse and let a single reviewer correction move it a little,
//! not a lot. The whole state is `2^bits` slots of three `f32`.

use serde::{Deserialize, Serialize};

use crate::{features::FeatureSet, ScoreError};

const MAGIC: &[u8; 8] = b"MRMODEL1";
pub const DEFAULT_BITS: u8 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FtrlParams {
    pub alpha: f64,
    pub beta: f64,
    pub l1: f64,
    pub l2: f64,
}

impl Default for FtrlParams {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            beta: 1.0,
            l1: 2.0,
            l2: 1.0,
        }
    }
}

/// Metadata stored with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Format of the file (this code writes 1).
    pub format: u32,
    /// The training run: set by `train`, kept by online updates.
    pub version: String,
    pub bits: u8,
    pub params: FtrlParams,
    pub trained_ham: u64,
    pub trained_spam: u64,
    /// Online updates (learn, reviewer corrections) since training.
    pub online_updates: u64,
}

#[derive(Debug, Clone)]
pub struct Model {
    info: ModelInfo,
    /// One slot per hashed feature.
    slots: Vec<Slot>,
    bias_z: f64,
    bias_n: f64,
}

/// FTRL's state for one feature, with the weight it implies kept current
/// so that scoring is one memory access per feature rather than a square
/// root and a division. Together, so scoring touches one cache line.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    z: f32,
    n: f32,
    w: f32,
}

/// A label for training and learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Ham,
    Spam,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Ham => "ham",
            Label::Spam => "spam",
        }
    }

    fn target(self) -> f64 {
        match self {
            Label::Ham => 0.0,
            Label::Spam => 1.0,
        }
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x.clamp(-35.0, 35.0)).exp())
}

impl Model {
    pub fn new(bits: u8, params: FtrlParams, version: impl Into<String>) -> Self {
        let bits = bits.clamp(10, 24);
        let size = 1usize << bits;
        Self {
            info: ModelInfo {
                format: 1,
                version: version.into(),
                bits,
                params,
                trained_ham: 0,
                trained_spam: 0,
                online_updates: 0,
            },
            slots: vec![Slot::default(); size],
            bias_z: 0.0,
            bias_n: 0.0,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn bits(&self) -> u8 {
        self.info.bits
    }

    fn weight_of(&self, z: f64, n: f64) -> f64 {
        let p = &self.info.params;
        if z.abs() <= p.l1 {
            0.0
        } else {
            -(z - z.signum() * p.l1) / ((p.beta + n.sqrt()) / p.alpha + p.l2)
        }
    }

    pub fn weight(&self, index: u32) -> f64 {
        self.slots.get(index as usize).map_or(0.0, |s| s.w as f64)
    }

    pub fn bias(&self) -> f64 {
        // The bias is not L1-shrunk: it only carries the base rate.
        let p = &self.info.params;
        -self.bias_z / ((p.beta + self.bias_n.sqrt()) / p.alpha + p.l2)
    }

    /// Whether the model has seen the feature in training.
    pub fn knows(&self, index: u32) -> bool {
        self.slots.get(index as usize).is_some_and(|s| s.n > 0.0)
    }

    /// Log-odds that the message is spam.
    pub fn logit(&self, features: &FeatureSet) -> f64 {
        self.bias() + features.indices().map(|i| self.weight(i)).sum::<f64>()
    }

    /// One FTRL-Proximal step on one labelled message; `importance`
    /// scales the gradient (class balancing, or a reviewer's correction
    /// counting more than autolearn).
    pub fn update(&mut self, features: &FeatureSet, label: Label, importance: f64) {
        let p = sigmoid(self.logit(features));
        let g = (p - label.target()) * importance;
        let g2 = g * g;
        let alpha = self.info.params.alpha;
        for i in features.indices() {
            let i = i as usize;
            let Some(&Slot { z, n, .. }) = self.slots.get(i) else {
                continue;
            };
            let (z, n) = (z as f64, n as f64);
            let w = self.weight_of(z, n);
            let sigma = ((n + g2).sqrt() - n.sqrt()) / alpha;
            let (z, n) = ((z + g - sigma * w) as f32, (n + g2) as f32);
            let w = self.weight_of(z as f64, n as f64) as f32;
            self.slots[i] = Slot { z, n, w };
        }
        let w = self.bias();
        let sigma = ((self.bias_n + g2).sqrt() - self.bias_n.sqrt()) / alpha;
        self.bias_z += g - sigma * w;
        self.bias_n += g2;
    }

    /// Counts a training sample (for the model's metadata).
    pub fn count_trained(&mut self, label: Label) {
        match label {
            Label::Ham => self.info.trained_ham += 1,
            Label::Spam => self.info.trained_spam += 1,
        }
    }

    pub fn count_online_update(&mut self) {
        self.info.online_updates += 1;
    }

    /// Number of features with a non-zero weight.
    pub fn nonzero_weights(&self) -> usize {
        self.slots.iter().filter(|s| s.w != 0.0).count()
    }

    /// The model as bytes: magic, JSON metadata, bias, then every touched
    /// coordinate as (index, z, n), little-endian. Untouched coordinates
    /// are zero and not written, so the file is a fraction of the table.
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.info).unwrap_or_default();
        let touched: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].n > 0.0)
            .collect();
        let mut out = Vec::with_capacity(8 + 4 + meta.len() + 16 + 4 + touched.len() * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.bias_z.to_le_bytes());
        out.extend_from_slice(&self.bias_n.to_le_bytes());
        out.extend_from_slice(&(touched.len() as u32).to_le_bytes());
        for i in touched {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(&self.slots[i].z.to_le_bytes());
            out.extend_from_slice(&self.slots[i].n.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ScoreError> {
        let bad = |why: &str| ScoreError::Model(why.to_string());
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(bad("not a mailroom model file (bad magic)"));
        }
        let meta_len = r.u32()? as usize;
        let info: ModelInfo = serde_json::from_slice(r.take(meta_len)?)
            .map_err(|e| bad(&format!("model metadata: {e}")))?;
        if info.format != 1 {
            return Err(bad(&format!(
                "model format {} is not supported",
                info.format
            )));
        }
        if !(10..=24).contains(&info.bits) {
            return Err(bad("model feature space out of range"));
        }
        let mut model = Model::new(info.bits, info.params, info.version.clone());
        model.info = info;
        model.bias_z = r.f64()?;
        model.bias_n = r.f64()?;
        let count = r.u32()? as usize;
        for _ in 0..count {
            let i = r.u32()? as usize;
            let z = r.f32()?;
            let n = r.f32()?;
            if i >= model.slots.len() || !z.is_finite() || !n.is_finite() || n < 0.0 {
                return Err(bad("model entry out of range"));
            }
            let w = model.weight_of(z as f64, n as f64) as f32;
            model.slots[i] = Slot { z, n, w };
        }
        if r.at != bytes.len() {
            return Err(bad("trailing bytes after the model"));
        }
        Ok(model)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScoreError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| ScoreError::Model("model file is truncated".into()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, ScoreError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Result<f32, ScoreError> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn f64(&mut self) -> Result<f64, ScoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }
}

/// Deterministic shuffling for training epochs (no RNG dependency: the
/// same corpus gives the same model).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
