//! `ModelSpec`: the one description of a defect classifier, shared by training and inference.
//!
//! A model is a plain feed-forward CNN: a *feature* part made of `conv2d`, `relu` and
//! `max_pool2d` layers, then exactly one global pool (`global_avg_pool` or `global_max_pool`),
//! then exactly one `linear` classifier. This shape is what makes the class-activation heatmap
//! (CAM) meaningful: with the average pool the logit of class `k` is the spatial mean of
//! `Σ_c W[k,c] · A[c,y,x]` over the last feature map `A`, so that per-pixel sum *is* the heatmap;
//! with the max pool the same sum shows where each feature's evidence comes from.
//!
//! Batch-norm is folded into the preceding convolution at export, so it never appears here.
//! [`ModelSpec::validate`] checks every rule and returns the shapes of every activation, which
//! both the GPU engine and the CPU reference build from.
//!
//! Over 800 lines as one piece: [`ModelSpec::validate`] checks every [`Layer`] kind's rules and
//! computes its shape in one walk that is read beside the enum it checks (about 540 lines of
//! `impl ModelSpec`); the cut to make next is the serde helpers and [`Shape3`] arithmetic into
//! their own module when a new layer kind is added.

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// The format tag stored in every model file.
pub const FORMAT_TAG: &str = "defect-inspector-model";
/// The newest format version this crate reads. Files are written with the oldest version that
/// holds them ([`ModelSpec::required_version`]): 1 for classifiers, 2 for anomaly models (the
/// `memory_bank` head), so a classifier made today still opens in a build that reads only 1.
pub const FORMAT_VERSION: u32 = 2;

/// Upper bounds that keep a damaged or hostile file from asking for absurd resources.
pub mod limits {
    /// Most entries of a memory bank (`Layer::MemoryBank`).
    pub const MAX_BANK_ENTRIES: u32 = 1 << 20;
    /// Largest model input side in pixels.
    pub const MAX_INPUT_SIDE: u32 = 4096;
    /// Most channels of any activation.
    pub const MAX_CHANNELS: u32 = 4096;
    /// Largest convolution / pooling kernel side.
    pub const MAX_KERNEL: u32 = 15;
    /// Most layers in a model.
    pub const MAX_LAYERS: usize = 256;
    /// Most classes.
    pub const MAX_CLASSES: usize = 1024;
    /// Most parameters (f32 values) in a model: 256 Mi values = 1 GiB.
    pub const MAX_PARAMETERS: u64 = 1 << 28;
    /// Most f32 values in one activation of one image: 64 Mi values = 256 MiB.
    pub const MAX_ACTIVATION_VALUES: u64 = 1 << 26;
}

/// The complete description of a model: input, layers, classes, decision rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Always [`FORMAT_TAG`].
    pub format: String,
    /// The format version: [`ModelSpec::required_version`] for files this crate writes.
    pub version: u32,
    /// A human name for the model ("ref-cnn", "tile-v3", ...).
    #[serde(default)]
    pub name: String,
    /// What the network expects as input.
    pub input: InputSpec,
    /// The layers, in order.
    pub layers: Vec<Layer>,
    /// Class names, in logit order.
    pub classes: Vec<String>,
    /// The classes that count as PASS; every other class is a defect (FAIL).
    pub pass_classes: Vec<String>,
    /// A part FAILs when its fail score `1 − Σ P(pass classes)` is at least this.
    pub threshold: f32,
    /// The review band's lower edge: a part scored below it PASSes, from it up to
    /// [`Self::threshold`] it goes to REVIEW (a person decides). Absent (files written before
    /// the band, or a val split too small to set two thresholds): two-way, PASS below
    /// `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f32>,
    /// Free-form record of how the model was made (dataset, date, metrics, command).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// What happens to a part: it passes, a person checks it, or the gate rejects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Good: the line keeps it.
    Pass,
    /// In the review band: set aside for a person.
    Review,
    /// Defective: rejected.
    Fail,
}

impl Decision {
    /// "pass", "review" or "fail": the word stored in the history and sent to the plant.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Review => "review",
            Self::Fail => "fail",
        }
    }

    /// The word on screen: "PASS", "REVIEW", "FAIL".
    pub fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Review => "REVIEW",
            Self::Fail => "FAIL",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pass" => Some(Self::Pass),
            "review" => Some(Self::Review),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }
}

/// The network input: size, channels and normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Input width in pixels.
    pub width: u32,
    /// Per-channel mean, on pixel values scaled to 0..1.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, on pixel values scaled to 0..1.
    pub std: Vec<f32>,
    /// How the region of interest becomes the input (stretched, or fitted keeping its shape).
    #[serde(default, skip_serializing_if = "Resize::is_stretch")]
    pub resize: Resize,
}

/// How a frame's region of interest becomes the model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Stretched to the input size: the aspect ratio is lost.
    #[default]
    Stretch,
    /// Scaled to fit inside the input keeping its aspect ratio, placed at the top-left corner;
    /// the rest of the input is padding of normalised value 0 (the mean), and positions of a
    /// [`Layer::DefectMaxPool`] that lie wholly in the padding never win.
    Fit,
}

impl Resize {
    fn is_stretch(&self) -> bool {
        *self == Self::Stretch
    }
}

impl InputSpec {
    /// The `(width, height)` of the input the region fills: the whole input when stretched;
    /// when fitted, the longer side (relative to the input's shape) fills the input and the
    /// other is rounded to the nearest pixel (at least 1). Integer arithmetic, so the GPU and
    /// the reference agree exactly.
    pub fn content_size(&self, roi_w: u32, roi_h: u32) -> (u32, u32) {
        let (w, h) = (self.width as u64, self.height as u64);
        let (rw, rh) = (roi_w.max(1) as u64, roi_h.max(1) as u64);
        match self.resize {
            Resize::Stretch => (self.width, self.height),
            Resize::Fit if rw * h >= rh * w => {
                (self.width, ((rh * w + rw / 2) / rw).clamp(1, h) as u32)
            }
            Resize::Fit => (((rw * h + rh / 2) / rh).clamp(1, w) as u32, self.height),
        }
    }
}

/// How many of `cells` positions (along one side of a feature map covering `side` input
/// pixels) touch the first `content` input pixels: `ceil(content · cells / side)`.
pub fn valid_cells(content: u32, cells: u32, side: u32) -> u32 {
    ((content as u64 * cells as u64).div_ceil(side.max(1) as u64) as u32).clamp(1, cells.max(1))
}

/// One layer of the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Layer {
    /// 2-D convolution with a square kernel; weight `[out, in, k, k]`, bias `[out]`.
    Conv2d {
        /// Input channels.
        in_channels: u32,
        /// Output channels.
        out_channels: u32,
        /// Kernel side.
        kernel: u32,
        /// Stride (both directions).
        stride: u32,
        /// Zero padding (all four sides), unless `pads` is given.
        padding: u32,
        /// Groups: 1 (dense) or `in_channels` (depthwise: `in_channels == out_channels`, one
        /// `k`×`k` filter per channel; weight `[out, 1, k, k]`).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: u32,
        /// Per-side zero padding `[top, left, bottom, right]`, replacing `padding` (TensorFlow
        /// "SAME" padding puts the odd pixel at the bottom and right).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pads: Option<[u32; 4]>,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// Adds the output of the earlier layer `from` (same shape): the inverted-residual skip.
    Add {
        /// Index of the layer whose output is added.
        from: usize,
    },
    /// Local patch features at one resolution: each listed layer's output is averaged over a
    /// `kernel`×`kernel` window (zero padding `kernel / 2`, always divided by `kernel²`) with
    /// the stride that brings it to the size of the last listed layer's output, and the results
    /// are concatenated over channels in list order.
    LocalFeatures {
        /// Indices of the layers whose outputs are pooled and concatenated.
        from: Vec<usize>,
        /// Window side (odd).
        kernel: u32,
    },
    /// Max pooling with a square window, no padding, floor mode.
    MaxPool2d {
        /// Window side.
        kernel: u32,
        /// Stride (both directions).
        stride: u32,
    },
    /// Mean over all spatial positions: `[C, H, W]` → `[C]`.
    GlobalAvgPool,
    /// Maximum over all spatial positions: `[C, H, W]` → `[C]`. With a last convolution that
    /// scores every position for every class, the image is judged by its most defect-like
    /// position, so a small defect is not averaged away; the heatmap is that score map.
    GlobalMaxPool,
    /// The most defect-like position: at each position, the margin = the largest FAIL-class
    /// channel minus the largest PASS-class channel (the input holds one score per class); the
    /// output is the input's class scores at the position with the largest margin, so the
    /// image is judged by its worst position and named after the defect class that wins there.
    /// Positions in the letterbox padding never win. The heatmap is the margin map.
    DefectMaxPool,
    /// The anomaly model's head (PatchCore): a bank of `entries` good-part feature vectors
    /// (weight `[entries, features]`) and the score calibration (bias `[center, scale]`, scale
    /// > 0). A position's anomaly score is its Euclidean distance to the nearest entry; the
    /// image's raw score is the largest over the positions the image covers (letterbox
    /// padding excluded), reweighted as PatchCore does: with the winning position's nearest
    /// entry m* and its `neighbors − 1` nearest other entries as the support and d_j the
    /// distances from the winning feature to them (d_0 = the raw score), the score is
    /// `(1 − softmax(d)_0) · raw`. The output is the logits `[0, (score − center) / scale]` of
    /// the two classes (PASS, anomaly), so P(anomaly) = sigmoid((score − center) / scale); the
    /// heatmap is `(position score − center) / scale`. It ends the network, alone: no pool or
    /// linear layer follows.
    MemoryBank {
        /// Bank entries.
        entries: u32,
        /// Features per entry (the input's channels).
        features: u32,
        /// Support size of the reweighting, 1..=16 (1: the raw score).
        neighbors: u32,
    },
    /// Fully connected; weight `[out, in]`, bias `[out]`.
    Linear {
        /// Input features.
        in_features: u32,
        /// Output features.
        out_features: u32,
    },
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

impl Layer {
    /// A dense convolution with the same zero padding on every side.
    pub fn conv(
        in_channels: u32,
        out_channels: u32,
        kernel: u32,
        stride: u32,
        padding: u32,
    ) -> Self {
        Self::Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            groups: 1,
            pads: None,
        }
    }

    /// `[top, left, bottom, right]` zero padding of a convolution (zeros for other layers).
    pub fn conv_pads(&self) -> [u32; 4] {
        match self {
            Self::Conv2d { padding, pads, .. } => pads.unwrap_or([*padding; 4]),
            _ => [0; 4],
        }
    }

    /// Layers that change their input in place (the engine keeps one buffer across them).
    pub fn in_place(&self) -> bool {
        matches!(self, Self::Relu | Self::Relu6 | Self::Add { .. })
    }

    /// The short kind name used in the JSON and in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conv2d { .. } => "conv2d",
            Self::Relu => "relu",
            Self::Relu6 => "relu6",
            Self::Add { .. } => "add",
            Self::LocalFeatures { .. } => "local_features",
            Self::DefectMaxPool => "defect_max_pool",
            Self::MaxPool2d { .. } => "max_pool2d",
            Self::GlobalAvgPool => "global_avg_pool",
            Self::GlobalMaxPool => "global_max_pool",
            Self::Linear { .. } => "linear",
            Self::MemoryBank { .. } => "memory_bank",
        }
    }

    /// Shapes of this layer's weight and bias tensors, if it has parameters.
    pub fn parameter_shapes(&self) -> Option<([usize; 4], usize)> {
        match *self {
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                ..
            } => Some((
                [
                    out_channels as usize,
                    (in_channels / groups.max(1)) as usize,
                    kernel as usize,
                    kernel as usize,
                ],
                out_channels as usize,
            )),
            Self::Linear {
                in_features,
                out_features,
            } => Some((
                [out_features as usize, in_features as usize, 1, 1],
                out_features as usize,
            )),
            Self::MemoryBank {
                entries, features, ..
            } => Some(([entries as usize, features as usize, 1, 1], 2)),
            _ => None,
        }
    }

    /// The weight shape as stored in the file (`[o, i, k, k]` for conv, `[o, i]` for linear).
    pub fn weight_file_shape(&self) -> Option<Vec<usize>> {
        match self {
            Self::Conv2d { .. } => self.parameter_shapes().map(|(w, _)| w.to_vec()),
            Self::Linear { .. } | Self::MemoryBank { .. } => {
                self.parameter_shapes().map(|(w, _)| w[..2].to_vec())
            }
            _ => None,
        }
    }
}

/// A `[channels, height, width]` activation shape of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape3 {
    /// Channels.
    pub c: u32,
    /// Height.
    pub h: u32,
    /// Width.
    pub w: u32,
}

impl Shape3 {
    /// Number of values.
    pub fn len(&self) -> u64 {
        self.c as u64 * self.h as u64 * self.w as u64
    }

    /// True when the shape holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What validation learns about a spec: activation shapes and the head.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `shapes[0]` is the network input; `shapes[i + 1]` is the output of layer `i` (for the
    /// global pool and the linear layer, `h = w = 1`).
    pub shapes: Vec<Shape3>,
    /// Index of the global pool layer (average or max).
    pub gap_layer: usize,
    /// Index of the linear classifier (the last layer).
    pub linear_layer: usize,
    /// For each class, whether it counts as PASS.
    pub is_pass: Vec<bool>,
    /// Total parameter count.
    pub parameters: u64,
}

impl Plan {
    /// Shape of the feature map the heatmap is drawn at (the global pool's input).
    pub fn heatmap_shape(&self) -> Shape3 {
        self.shapes[self.gap_layer]
    }
}

impl ModelSpec {
    /// A spec with the standard format tag, no training record and threshold 0.5.
    pub fn new(
        name: impl Into<String>,
        input: InputSpec,
        layers: Vec<Layer>,
        classes: Vec<String>,
        pass_classes: Vec<String>,
    ) -> Self {
        let version = match layers.last() {
            Some(Layer::MemoryBank { .. }) => 2,
            _ => 1,
        };
        Self {
            format: FORMAT_TAG.to_owned(),
            version,
            name: name.into(),
            input,
            layers,
            classes,
            pass_classes,
            threshold: 0.5,
            pass_threshold: None,
            training: serde_json::Value::Null,
        }
    }

    /// The "ref-cnn" benchmark architecture of the kernels issue: 1×128×128 input, four 3×3
    /// convolutions (16, 32, 64, 64 channels), three 2×2 max-pools, global pool, linear.
    pub fn ref_cnn(classes: Vec<String>, pass_classes: Vec<String>) -> Self {
        let conv = |i, o| Layer::conv(i, o, 3, 1, 1);
        let pool = Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
        };
        let n = classes.len() as u32;
        Self::new(
            "ref-cnn",
            InputSpec {
                channels: 1,
                height: 128,
                width: 128,
                mean: vec![0.5],
                std: vec![0.25],
                resize: Default::default(),
            },
            vec![
                conv(1, 16),
                Layer::Relu,
                pool.clone(),
                conv(16, 32),
                Layer::Relu,
                pool.clone(),
                conv(32, 64),
                Layer::Relu,
                pool,
                conv(64, 64),
                Layer::Relu,
                Layer::GlobalAvgPool,
                Layer::Linear {
                    in_features: 64,
                    out_features: n,
                },
            ],
            classes,
            pass_classes,
        )
    }

    /// Checks every rule and computes the activation shapes.
    pub fn validate(&self) -> Result<Plan, SpecError> {
        use limits::*;
        if self.format != FORMAT_TAG {
            return Err(SpecError::Format(format!(
                "format tag is {:?}, expected {FORMAT_TAG:?}",
                self.format
            )));
        }
        if self.version == 0 || self.version > FORMAT_VERSION {
            return Err(SpecError::Format(format!(
                "format version {} is not supported: this build reads versions 1 to \
                 {FORMAT_VERSION}; a newer Defect Inspector wrote it — update the app to open it",
                self.version
            )));
        }
        if self.version < self.required_version() {
            return Err(SpecError::Format(format!(
                "format version {} cannot hold a memory_bank layer (needs version {})",
                self.version,
                self.required_version()
            )));
        }
        let inp = &self.input;
        if inp.channels != 1 && inp.channels != 3 {
            return Err(SpecError::Input(format!(
                "channels must be 1 or 3, found {}",
                inp.channels
            )));
        }
        for (what, v) in [("height", inp.height), ("width", inp.width)] {
            if v == 0 || v > MAX_INPUT_SIDE {
                return Err(SpecError::Input(format!(
                    "{what} must be 1..={MAX_INPUT_SIDE}, found {v}"
                )));
            }
        }
        for (what, v) in [("mean", &inp.mean), ("std", &inp.std)] {
            if v.len() != inp.channels as usize {
                return Err(SpecError::Input(format!(
                    "{what} needs one value per channel ({}), found {}",
                    inp.channels,
                    v.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(SpecError::Input(format!(
                    "{what} has a non-finite value: {v:?}"
                )));
            }
        }
        if inp.std.iter().any(|&s| s <= 0.0) {
            return Err(SpecError::Input(format!(
                "std values must be > 0, found {:?}",
                inp.std
            )));
        }

        if self.classes.len() < 2 || self.classes.len() > MAX_CLASSES {
            return Err(SpecError::Classes(format!(
                "need 2..={MAX_CLASSES} classes, found {}",
                self.classes.len()
            )));
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(SpecError::Classes(format!("class {i} has an empty name")));
            }
            if self.classes[..i].contains(c) {
                return Err(SpecError::Classes(format!("class {c:?} appears twice")));
            }
        }
        for p in &self.pass_classes {
            if !self.classes.contains(p) {
                return Err(SpecError::Classes(format!(
                    "pass class {p:?} is not one of the classes {:?}",
                    self.classes
                )));
            }
        }
        let is_pass: Vec<bool> = self
            .classes
            .iter()
            .map(|c| self.pass_classes.contains(c))
            .collect();
        if !is_pass.iter().any(|&p| p) || is_pass.iter().all(|&p| p) {
            return Err(SpecError::Classes(format!(
                "at least one PASS and one FAIL class are needed; pass classes {:?} of {:?}",
                self.pass_classes, self.classes
            )));
        }
        if !(self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold)) {
            return Err(SpecError::Threshold(self.threshold));
        }
        if let Some(t) = self.pass_threshold
            && !(t.is_finite() && (0.0..=self.threshold).contains(&t))
        {
            return Err(SpecError::ReviewBand {
                pass: t,
                fail: self.threshold,
            });
        }

        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return Err(SpecError::Layers(format!(
                "need 1..={MAX_LAYERS} layers, found {}",
                self.layers.len()
            )));
        }
        let mut shapes = vec![Shape3 {
            c: inp.channels,
            h: inp.height,
            w: inp.width,
        }];
        let mut gap_layer = None;
        let mut linear_layer = None;
        let mut parameters = 0u64;
        for (i, layer) in self.layers.iter().enumerate() {
            let s = *shapes.last().unwrap_or(&shapes[0]);
            let bad = |msg: String| SpecError::Layer {
                index: i,
                kind: layer.kind(),
                msg,
            };
            if let Some(g) = gap_layer
                && (!matches!(layer, Layer::Linear { .. }) || linear_layer.is_some())
            {
                return Err(bad(format!(
                    "only one linear classifier may follow the global pool (layer {g})"
                )));
            }
            let out = match *layer {
                Layer::MemoryBank {
                    entries,
                    features,
                    neighbors,
                } => {
                    if i + 1 != self.layers.len() {
                        return Err(bad("must be the last layer".into()));
                    }
                    if features != s.c {
                        return Err(bad(format!(
                            "holds {features}-feature entries for a {}-channel input",
                            s.c
                        )));
                    }
                    if entries == 0 || entries > MAX_BANK_ENTRIES {
                        return Err(bad(format!(
                            "entries must be 1..={MAX_BANK_ENTRIES}, found {entries}"
                        )));
                    }
                    if !(1..=16).contains(&neighbors) {
                        return Err(bad(format!("neighbors must be 1..=16, found {neighbors}")));
                    }
                    if self.classes.len() != 2 || !is_pass[0] || is_pass[1] {
                        return Err(bad(format!(
                            "an anomaly model has two classes, PASS then anomaly; found {:?} \
                             with pass classes {:?}",
                            self.classes, self.pass_classes
                        )));
                    }
                    parameters += entries as u64 * features as u64 + 2;
                    gap_layer = Some(i);
                    linear_layer = Some(i);
                    Shape3 { c: 2, h: 1, w: 1 }
                }
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    groups,
                    ..
                } => {
                    if in_channels != s.c {
                        return Err(bad(format!(
                            "expects {in_channels} input channels, found {}",
                            s.c
                        )));
                    }
                    if out_channels == 0 || out_channels > MAX_CHANNELS {
                        return Err(bad(format!(
                            "out_channels must be 1..={MAX_CHANNELS}, found {out_channels}"
                        )));
                    }
                    if groups != 1 && !(groups == in_channels && out_channels == in_channels) {
                        return Err(bad(format!(
                            "groups must be 1 or, for a depthwise convolution, equal to in and out \
                             channels; found groups {groups} for {in_channels} → {out_channels}"
                        )));
                    }
                    if kernel == 0 || kernel > MAX_KERNEL || stride == 0 || stride > MAX_KERNEL {
                        return Err(bad(format!(
                            "kernel and stride must be 1..={MAX_KERNEL}, found kernel {kernel}, stride {stride}"
                        )));
                    }
                    if groups > 1 && (kernel > 7 || stride > 2) {
                        return Err(bad(format!(
                            "a depthwise convolution needs kernel ≤ 7 and stride ≤ 2, found \
                             kernel {kernel}, stride {stride}"
                        )));
                    }
                    let [pt, pl, pb, pr] = layer.conv_pads();
                    if [pt, pl, pb, pr].iter().any(|&p| p >= kernel) {
                        return Err(bad(format!(
                            "padding {:?} must be smaller than kernel {kernel}",
                            [pt, pl, pb, pr]
                        )));
                    }
                    let (ph, pw) = (s.h + pt + pb, s.w + pl + pr);
                    if ph < kernel || pw < kernel {
                        return Err(bad(format!(
                            "a {kernel}×{kernel} kernel does not fit the padded {ph}×{pw} input"
                        )));
                    }
                    parameters += out_channels as u64
                        * ((in_channels / groups) as u64 * (kernel as u64).pow(2) + 1);
                    Shape3 {
                        c: out_channels,
                        h: (ph - kernel) / stride + 1,
                        w: (pw - kernel) / stride + 1,
                    }
                }
                Layer::Relu6 => {
                    if i == 0 {
                        return Err(bad("a network cannot start with relu6".into()));
                    }
                    s
                }
                Layer::Add { from } => {
                    if from >= i {
                        return Err(bad(format!("adds layer {from}, which is not before it")));
                    }
                    if from + 1 < i && self.layers[from + 1].in_place() {
                        return Err(bad(format!(
                            "adds layer {from}, whose output layer {} changes in place; name that one",
                            from + 1
                        )));
                    }
                    let f = shapes[from + 1];
                    if f != s {
                        return Err(bad(format!(
                            "adds layer {from}'s {}×{}×{} output to a {}×{}×{} one",
                            f.c, f.h, f.w, s.c, s.h, s.w
                        )));
                    }
                    s
                }
                Layer::LocalFeatures { ref from, kernel } => {
                    if from.is_empty() || from.len() > 16 {
                        return Err(bad("needs 1..=16 source layers".into()));
                    }
                    if kernel == 0 || kernel % 2 == 0 || kernel > MAX_KERNEL {
                        return Err(bad(format!(
                            "kernel must be odd and 1..={MAX_KERNEL}, found {kernel}"
                        )));
                    }
                    if let Some(&f) = from.iter().find(|&&f| f >= i) {
                        return Err(bad(format!("reads layer {f}, which is not before it")));
                    }
                    if let Some(&f) = from
                        .iter()
                        .find(|&&f| f + 1 < i && self.layers[f + 1].in_place())
                    {
                        return Err(bad(format!(
                            "reads layer {f}, whose output layer {} changes in place; name that one",
                            f + 1
                        )));
                    }
                    let Some(&last) = from.last() else {
                        unreachable!("checked non-empty")
                    };
                    let target = shapes[last + 1];
                    let mut c = 0;
                    for &f in from {
                        let src = shapes[f + 1];
                        let stride = local_stride(src, target);
                        let out = pooled_side(src.h, kernel, stride);
                        if stride == 0
                            || out != target.h
                            || pooled_side(src.w, kernel, stride) != target.w
                        {
                            return Err(bad(format!(
                                "layer {f}'s {}×{} output cannot be pooled to {}×{}",
                                src.h, src.w, target.h, target.w
                            )));
                        }
                        c += src.c;
                    }
                    if c > MAX_CHANNELS {
                        return Err(bad(format!("{c} channels exceed {MAX_CHANNELS}")));
                    }
                    Shape3 {
                        c,
                        h: target.h,
                        w: target.w,
                    }
                }
                Layer::Relu => {
                    if i == 0 {
                        return Err(bad("a network cannot start with relu".into()));
                    }
                    s
                }
                Layer::MaxPool2d { kernel, stride } => {
                    if kernel == 0 || kernel > MAX_KERNEL || stride == 0 || stride > MAX_KERNEL {
                        return Err(bad(format!(
                            "kernel and stride must be 1..={MAX_KERNEL}, found kernel {kernel}, stride {stride}"
                        )));
                    }
                    if s.h < kernel || s.w < kernel {
                        return Err(bad(format!(
                            "a {kernel}×{kernel} window does not fit the {}×{} input",
                            s.h, s.w
                        )));
                    }
                    Shape3 {
                        c: s.c,
                        h: (s.h - kernel) / stride + 1,
                        w: (s.w - kernel) / stride + 1,
                    }
                }
                Layer::DefectMaxPool => {
                    if s.c as usize != self.classes.len() {
                        return Err(bad(format!(
                            "needs one score per class ({}) at each position, found {} channels",
                            self.classes.len(),
                            s.c
                        )));
                    }
                    if !self.layers[..i]
                        .iter()
                        .any(|l| matches!(l, Layer::Conv2d { .. }))
                    {
                        return Err(bad("needs at least one conv2d before it".into()));
                    }
                    gap_layer = Some(i);
                    Shape3 { c: s.c, h: 1, w: 1 }
                }
                Layer::GlobalAvgPool | Layer::GlobalMaxPool => {
                    if !self.layers[..i]
                        .iter()
                        .any(|l| matches!(l, Layer::Conv2d { .. }))
                    {
                        return Err(bad("needs at least one conv2d before it".into()));
                    }
                    gap_layer = Some(i);
                    Shape3 { c: s.c, h: 1, w: 1 }
                }
                Layer::Linear {
                    in_features,
                    out_features,
                } => {
                    if gap_layer.is_none() {
                        return Err(bad("a linear layer must follow the global pool".into()));
                    }
                    if in_features != s.c {
                        return Err(bad(format!(
                            "expects {in_features} input features, found {}",
                            s.c
                        )));
                    }
                    if out_features as usize != self.classes.len() {
                        return Err(bad(format!(
                            "has {out_features} outputs but the model has {} classes",
                            self.classes.len()
                        )));
                    }
                    linear_layer = Some(i);
                    parameters += out_features as u64 * (in_features as u64 + 1);
                    Shape3 {
                        c: out_features,
                        h: 1,
                        w: 1,
                    }
                }
            };
            if out.len() > MAX_ACTIVATION_VALUES {
                return Err(bad(format!(
                    "its output {}×{}×{} is larger than the limit of {MAX_ACTIVATION_VALUES} values",
                    out.c, out.h, out.w
                )));
            }
            if parameters > MAX_PARAMETERS {
                return Err(bad(format!(
                    "the model exceeds {MAX_PARAMETERS} parameters"
                )));
            }
            shapes.push(out);
        }
        let (Some(gap_layer), Some(linear_layer)) = (gap_layer, linear_layer) else {
            return Err(SpecError::Layers(
                "the network must end with a global pool (avg or max) followed by one linear \
                 classifier, or with a memory bank"
                    .into(),
            ));
        };
        Ok(Plan {
            shapes,
            gap_layer,
            linear_layer,
            is_pass,
            parameters,
        })
    }

    /// The oldest format version that holds this spec: 2 with a memory bank, else 1.
    pub fn required_version(&self) -> u32 {
        if self.is_anomaly() { 2 } else { 1 }
    }

    /// True for an anomaly model (one that ends in a [`Layer::MemoryBank`]).
    pub fn is_anomaly(&self) -> bool {
        matches!(self.layers.last(), Some(Layer::MemoryBank { .. }))
    }

    /// The class a dataset label stands for: its position among the classes; for an anomaly
    /// model the PASS class for a PASS label (one of `pass_labels`, or the PASS class name) and
    /// the anomaly class for any other label.
    pub fn class_of_label(&self, label: &str, pass_labels: &[String]) -> Option<usize> {
        if self.is_anomaly() {
            let pass = pass_labels.iter().any(|p| p == label) || self.classes[0] == label;
            return Some(if pass { 0 } else { 1 });
        }
        self.classes.iter().position(|c| c == label)
    }

    /// The FAIL score of a probability vector: `1 − Σ P(pass classes)`, in 0..=1.
    pub fn fail_score(&self, probabilities: &[f32]) -> f32 {
        let pass: f32 = self
            .classes
            .iter()
            .zip(probabilities)
            .filter(|(c, _)| self.pass_classes.contains(c))
            .map(|(_, p)| *p)
            .sum();
        (1.0 - pass).clamp(0.0, 1.0)
    }

    /// The three-way decision for a fail score at the thresholds given (the station may use
    /// others than the file's): FAIL at or above `fail_at`; REVIEW from `pass_below` up to it;
    /// PASS below. `pass_below` None (or not below `fail_at`) is the two-way rule.
    pub fn decide(score: f32, pass_below: Option<f32>, fail_at: f32) -> Decision {
        if score >= fail_at {
            Decision::Fail
        } else if pass_below.is_some_and(|t| score >= t) {
            Decision::Review
        } else {
            Decision::Pass
        }
    }

    /// Multiply-accumulate count of one forward pass, times two (FLOPs), for one image.
    pub fn flops_per_image(&self) -> u64 {
        let Ok(plan) = self.validate() else { return 0 };
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| match *l {
                Layer::Conv2d {
                    in_channels,
                    kernel,
                    groups,
                    ..
                } => {
                    2 * plan.shapes[i + 1].len()
                        * (in_channels / groups) as u64
                        * (kernel as u64).pow(2)
                }
                Layer::Linear {
                    in_features,
                    out_features,
                } => 2 * in_features as u64 * out_features as u64,
                // Distances of every position to every entry, plus the support search.
                Layer::MemoryBank {
                    entries, features, ..
                } => {
                    let s = plan.shapes[i];
                    2 * (s.h as u64 * s.w as u64 + 1) * entries as u64 * features as u64
                }
                _ => 0,
            })
            .sum()
    }
}

/// The stride that brings a `src` activation to the size of `target` in a
/// [`Layer::LocalFeatures`] (0 when none does).
pub fn local_stride(src: Shape3, target: Shape3) -> u32 {
    if target.h == 0 || src.h < target.h {
        return 0;
    }
    (src.h + target.h / 2) / target.h
}

/// Output side of a `kernel`-window average with padding `kernel / 2` and `stride`.
pub fn pooled_side(side: u32, kernel: u32, stride: u32) -> u32 {
    if stride == 0 || side + 2 * (kernel / 2) < kernel {
        return 0;
    }
    (side + 2 * (kernel / 2) - kernel) / stride + 1
}
