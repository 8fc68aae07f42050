//! The model presets: from-scratch CNNs of several sizes and the pretrained-backbone presets
//! (which train only a head, see [`super::head`]), and the `ModelSpec` each one builds.

use anyhow::bail;
use kernels::{InputSpec, Layer, ModelSpec, Resize};

/// A model preset: input side and feature layers (global pool + classifier are appended).
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Name.
    pub name: &'static str,
    /// What it is for.
    pub about: &'static str,
    /// Input side in pixels (square).
    pub side: u32,
    /// Feature layers: (out channels, kernel, stride, max-pool window after: 0 = none, `k` = a
    /// `k`×`k` window with stride `k`).
    pub convs: &'static [(u32, u32, u32, u32)],
    /// How the feature map becomes class scores.
    pub head: Head,
    /// Side of the square patches a [`Head::MaxScore`] model trains on (0: whole images). The
    /// network is convolutional up to its max pool, so it trains on patches of the input-size
    /// image and judges whole images; with masks, a patch is defective exactly when it holds
    /// defect pixels. Patches spend the compute on the defects instead of on acres of clean
    /// surface, which is what lets a CPU train at a resolution small defects survive.
    pub patch: u32,
    /// `Some(resize)`: the pretrained backbone with a per-position head (`train_head`), the
    /// input `side`×`side` pixels, the region stretched or fitted keeping its shape.
    pub backbone: Option<Resize>,
}

/// The classifier head of a preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Global average pool of the features, then the linear classifier.
    Avg,
    /// A 1×1 convolution scoring every position for every class (no relu), the global max pool
    /// (the image is judged by its most defect-like position), then a linear calibration. The
    /// score map is trained from the defect masks where the dataset has them.
    MaxScore,
}

/// The presets. `ref-cnn` is the kernels benchmark model.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        about: "for tests and smoke runs: 32×32, 2 convs (8-16)",
        side: 32,
        convs: &[(8, 3, 1, 2), (16, 3, 1, 0)],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tiny-seg",
        about: "for tests and smoke runs: tiny with the mask-trained max-score head",
        side: 32,
        convs: &[(8, 3, 1, 2), (16, 3, 1, 0)],
        head: Head::MaxScore,
        patch: 24,
        backbone: None,
    },
    Preset {
        name: "ref-cnn",
        about: "the kernels benchmark CNN: 128×128, 4 convs (16-32-64-64), ~99 MFLOP",
        side: 128,
        convs: &[(16, 3, 1, 2), (32, 3, 1, 2), (64, 3, 1, 2), (64, 3, 1, 0)],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tile-s",
        about: "small and fast: 96×96, 5 convs (16-32-48-64-96), ~44 MFLOP",
        side: 96,
        convs: &[
            (16, 3, 1, 2),
            (32, 3, 1, 2),
            (48, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 0),
        ],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tile-m",
        about: "medium: 160×160, strided stem + 5 convs (24-32-64-96-128), ~150 MFLOP",
        side: 160,
        convs: &[
            (24, 5, 2, 0),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 2),
            (128, 3, 1, 0),
        ],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tile-seg",
        about: "default: 256×256, 6 convs (16-32-64-64-96-96), per-position class scores \
                trained from defect masks on 112-px patches, global max pool, ~0.47 GFLOP",
        side: 256,
        convs: &[
            (16, 3, 1, 2),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 0),
            (96, 3, 1, 0),
        ],
        head: Head::MaxScore,
        patch: 112,
        backbone: None,
    },
    Preset {
        name: "lite0",
        about: "default: pretrained EfficientNet-Lite0 (frozen, stages 0-4), 256 px keeping the \
                part's shape, per-position head 232-128-classes trained from masks, judged by the \
                most defect-like position; ~0.64 GFLOP",
        side: 256,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Fit),
    },
    Preset {
        name: "lite0-384",
        about: "lite0 at 384 px keeping the part's shape (small defects), ~1.4 GFLOP",
        side: 384,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Fit),
    },
    Preset {
        name: "lite0-tiny",
        about: "for tests and smoke runs: lite0 at 64 px keeping the part's shape",
        side: 64,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Fit),
    },
    Preset {
        name: "lite0-stretch",
        about: "lite0 at 256 px, the region stretched to a square",
        side: 256,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Stretch),
    },
];

/// Builds the spec of `preset` for a dataset's classes and input statistics.
pub fn preset_spec(
    preset: &str,
    input: InputSpec,
    classes: Vec<String>,
    pass: Vec<String>,
) -> anyhow::Result<ModelSpec> {
    let Some(p) = PRESETS.iter().find(|p| p.name == preset) else {
        bail!(
            "unknown preset {preset:?}; choose one of {:?}",
            PRESETS.iter().map(|p| p.name).collect::<Vec<_>>()
        );
    };
    let input = InputSpec {
        height: p.side,
        width: p.side,
        ..input
    };
    let mut layers = Vec::new();
    let mut c = input.channels;
    for &(o, k, s, pool) in p.convs {
        layers.push(Layer::conv(c, o, k, s, k / 2));
        layers.push(Layer::Relu);
        if pool > 0 {
            layers.push(Layer::MaxPool2d {
                kernel: pool,
                stride: pool,
            });
        }
        c = o;
    }
    match p.head {
        Head::Avg => layers.push(Layer::GlobalAvgPool),
        Head::MaxScore => {
            let k = classes.len() as u32;
            layers.push(Layer::conv(c, k, 1, 1, 0));
            layers.push(Layer::GlobalMaxPool);
            c = k;
        }
    }
    layers.push(Layer::Linear {
        in_features: c,
        out_features: classes.len() as u32,
    });
    let spec = ModelSpec::new(p.name, input, layers, classes, pass);
    spec.validate()?;
    Ok(spec)
}
