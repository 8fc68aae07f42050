//! The pretrained backbone: EfficientNet-Lite0 (ImageNet) as [`Layer`]s and weights.
//!
//! The weights come as a safetensors file with the tensor names of EfficientNet-PyTorch
//! (`_conv_stem.weight`, `_bn0.*`, `_blocks.{n}._expand_conv.weight`, `._bn0.*`,
//! `._depthwise_conv.weight`, `._bn1.*`, `._project_conv.weight`, `._bn2.*`, `_conv_head.weight`,
//! `_bn1.*`, `_fc.*`); `assets/backbones/README.md` says where they come from and how the file
//! was made. [`efficientnet_lite0`] checks every tensor it needs (the first that is missing or
//! misshaped is named in the error), folds each batch-norm (eps 1e-3) into its convolution and
//! lays the network out for one input size with TensorFlow "SAME" padding (the odd padding
//! pixel of a stride-2 convolution goes to the bottom and right).
//!
//! The network: stem (3×3 stride 2, 32 channels, ReLU6), then seven stages of inverted
//! residual blocks (1×1 expand + ReLU6 → k×k depthwise + ReLU6 → 1×1 project, plus the input
//! when the stride is 1 and the channels are unchanged; no squeeze-excitation), then a 1×1 head
//! (1280, ReLU6), global average pool and the 1000-class ImageNet classifier.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::model::LayerWeights;
use crate::spec::{InputSpec, Layer, Resize};

/// One stage: (blocks, kernel, first stride, output channels, expansion).
pub const LITE0_STAGES: [(usize, u32, u32, u32, u32); 7] = [
    (1, 3, 1, 16, 1),
    (2, 3, 2, 24, 6),
    (2, 5, 2, 40, 6),
    (3, 3, 2, 80, 6),
    (3, 5, 1, 112, 6),
    (4, 5, 2, 192, 6),
    (1, 3, 1, 320, 6),
];

/// Stem output channels.
const STEM: u32 = 32;
/// Batch-norm epsilon of the TensorFlow weights.
const BN_EPS: f64 = 1e-3;
/// ImageNet normalisation of RGB values in 0..1.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What is wrong with a backbone weight file.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The file cannot be read.
    #[error("cannot read backbone weights {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a safetensors file.
    #[error(
        "backbone weights are not a valid safetensors file ({0}); restore the asset from the repository or re-run its conversion (assets/backbones/README.md)"
    )]
    Container(String),
    /// A tensor is missing or has the wrong dtype or shape.
    #[error(
        "backbone tensor {name}: expected {expected}, found {found} — this is not EfficientNet-Lite0 weights, or the file is damaged"
    )]
    Tensor {
        /// The first tensor that does not fit.
        name: String,
        /// What was expected.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A request the weights cannot satisfy.
    #[error("{0}")]
    Request(String),
}

/// The backbone laid out for one input: layers, folded weights, and where each stage ends.
#[derive(Clone, Debug)]
pub struct Backbone {
    /// The 3-channel input, ImageNet-normalised.
    pub input: InputSpec,
    /// The layers.
    pub layers: Vec<Layer>,
    /// Their weights (folded batch-norm).
    pub weights: Vec<Option<LayerWeights>>,
    /// `stage_ends[s]` = index of the layer whose output is stage `s`'s output.
    pub stage_ends: Vec<usize>,
    /// Channels of each stage's output.
    pub stage_channels: Vec<u32>,
}

/// TensorFlow "SAME" padding of one side: `(before, after, out)`.
pub fn same_padding(n: u32, kernel: u32, stride: u32) -> (u32, u32, u32) {
    let out = n.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(n);
    (total / 2, total - total / 2, out)
}

struct Reader<'a> {
    st: SafeTensors<'a>,
}

impl Reader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, BackboneError> {
        let view = self.st.tensor(name).map_err(|_| BackboneError::Tensor {
            name: name.to_owned(),
            expected: format!("F32 {shape:?}"),
            found: "no such tensor".into(),
        })?;
        if view.dtype() != Dtype::F32 || view.shape() != shape {
            return Err(BackboneError::Tensor {
                name: name.to_owned(),
                expected: format!("F32 {shape:?}"),
                found: format!("{:?} {:?}", view.dtype(), view.shape()),
            });
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(BackboneError::Tensor {
                name: name.to_owned(),
                expected: "finite values".into(),
                found: "NaN or infinity".into(),
            });
        }
        Ok(values)
    }

    /// A bias-free convolution followed by batch-norm `bn`, folded.
    fn conv_bn(
        &self,
        conv: &str,
        bn: &str,
        shape: [usize; 4],
    ) -> Result<LayerWeights, BackboneError> {
        let mut weight = self.tensor(&format!("{conv}.weight"), &shape)?;
        let o = shape[0];
        let gamma = self.tensor(&format!("{bn}.weight"), &[o])?;
        let beta = self.tensor(&format!("{bn}.bias"), &[o])?;
        let mean = self.tensor(&format!("{bn}.running_mean"), &[o])?;
        let var = self.tensor(&format!("{bn}.running_var"), &[o])?;
        let per_out = weight.len() / o;
        let mut bias = vec![0.0; o];
        for c in 0..o {
            let scale = gamma[c] as f64 / (var[c] as f64 + BN_EPS).sqrt();
            for w in &mut weight[c * per_out..(c + 1) * per_out] {
                *w = (*w as f64 * scale) as f32;
            }
            bias[c] = (beta[c] as f64 - mean[c] as f64 * scale) as f32;
        }
        Ok(LayerWeights { weight, bias })
    }
}

/// How much of the network to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Stem and stages `0..=last`.
    Stages(usize),
    /// The whole ImageNet classifier (all stages, head, pool, 1000-class linear layer).
    Classifier,
}

/// Reads a weight file and lays the backbone out for a 3-channel `height`×`width` input.
pub fn load(
    path: &Path,
    height: u32,
    width: u32,
    extent: Extent,
) -> Result<Backbone, BackboneError> {
    let bytes = std::fs::read(path).map_err(|source| BackboneError::Io {
        path: path.to_owned(),
        source,
    })?;
    efficientnet_lite0(&bytes, height, width, extent)
}

/// Lays EfficientNet-Lite0 out from safetensors `bytes` (see the module docs).
pub fn efficientnet_lite0(
    bytes: &[u8],
    height: u32,
    width: u32,
    extent: Extent,
) -> Result<Backbone, BackboneError> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| BackboneError::Container(e.to_string()))?;
    let r = Reader { st };
    let last_stage = match extent {
        Extent::Stages(s) if s < LITE0_STAGES.len() => s,
        Extent::Stages(s) => {
            return Err(BackboneError::Request(format!(
                "EfficientNet-Lite0 has stages 0..={}, asked for {s}",
                LITE0_STAGES.len() - 1
            )));
        }
        Extent::Classifier => LITE0_STAGES.len() - 1,
    };
    if height < 2 || width < 2 {
        return Err(BackboneError::Request(format!(
            "the backbone needs an input of at least 2×2 pixels, not {width}×{height}"
        )));
    }
    let mut layers = Vec::new();
    let mut weights = Vec::new();
    let (mut h, mut w) = (height, width);
    let push = |layers: &mut Vec<Layer>, weights: &mut Vec<_>, l: Layer, lw| {
        layers.push(l);
        weights.push(lw);
    };
    // A k×k convolution with SAME padding at the current size; updates the size.
    let same = |h: &mut u32, w: &mut u32, cin: u32, cout: u32, k: u32, s: u32, groups: u32| {
        let (t, b, oh) = same_padding(*h, k, s);
        let (l, r, ow) = same_padding(*w, k, s);
        *h = oh;
        *w = ow;
        Layer::Conv2d {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: s,
            padding: 0,
            groups,
            pads: Some([t, l, b, r]),
        }
    };

    let stem = r.conv_bn("_conv_stem", "_bn0", [STEM as usize, 3, 3, 3])?;
    let l = same(&mut h, &mut w, 3, STEM, 3, 2, 1);
    push(&mut layers, &mut weights, l, Some(stem));
    push(&mut layers, &mut weights, Layer::Relu6, None);

    let mut c = STEM;
    let mut block = 0usize;
    let mut stage_ends = Vec::new();
    let mut stage_channels = Vec::new();
    for &(blocks, k, first_stride, out, expand) in &LITE0_STAGES[..=last_stage] {
        for b in 0..blocks {
            let stride = if b == 0 { first_stride } else { 1 };
            let input_layer = layers.len() - 1;
            let p = format!("_blocks.{block}");
            let mid = c * expand;
            if expand != 1 {
                let wts = r.conv_bn(
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    [mid as usize, c as usize, 1, 1],
                )?;
                push(
                    &mut layers,
                    &mut weights,
                    Layer::conv(c, mid, 1, 1, 0),
                    Some(wts),
                );
                push(&mut layers, &mut weights, Layer::Relu6, None);
            }
            let wts = r.conv_bn(
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                [mid as usize, 1, k as usize, k as usize],
            )?;
            let l = same(&mut h, &mut w, mid, mid, k, stride, mid);
            push(&mut layers, &mut weights, l, Some(wts));
            push(&mut layers, &mut weights, Layer::Relu6, None);
            let wts = r.conv_bn(
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                [out as usize, mid as usize, 1, 1],
            )?;
            push(
                &mut layers,
                &mut weights,
                Layer::conv(mid, out, 1, 1, 0),
                Some(wts),
            );
            if stride == 1 && c == out {
                push(
                    &mut layers,
                    &mut weights,
                    Layer::Add { from: input_layer },
                    None,
                );
            }
            c = out;
            block += 1;
        }
        stage_ends.push(layers.len() - 1);
        stage_channels.push(c);
    }
    if extent == Extent::Classifier {
        let head = r.conv_bn("_conv_head", "_bn1", [1280, c as usize, 1, 1])?;
        push(
            &mut layers,
            &mut weights,
            Layer::conv(c, 1280, 1, 1, 0),
            Some(head),
        );
        push(&mut layers, &mut weights, Layer::Relu6, None);
        push(&mut layers, &mut weights, Layer::GlobalAvgPool, None);
        let fc = LayerWeights {
            weight: r.tensor("_fc.weight", &[1000, 1280])?,
            bias: r.tensor("_fc.bias", &[1000])?,
        };
        push(
            &mut layers,
            &mut weights,
            Layer::Linear {
                in_features: 1280,
                out_features: 1000,
            },
            Some(fc),
        );
    }
    Ok(Backbone {
        input: InputSpec {
            channels: 3,
            height,
            width,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            resize: Resize::Stretch,
        },
        layers,
        weights,
        stage_ends,
        stage_channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(256, 3, 2), (0, 1, 128));
        assert_eq!(same_padding(32, 5, 2), (1, 2, 16));
        assert_eq!(same_padding(57, 3, 2), (1, 1, 29));
        assert_eq!(same_padding(16, 5, 1), (2, 2, 16));
        assert_eq!(same_padding(16, 1, 1), (0, 0, 16));
    }
}
