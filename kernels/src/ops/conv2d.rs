//! Wrapper of `shaders/conv2d.wgsl`: fused conv2d + bias (+ ReLU) (+ the residual add) on NHWC4 activations.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/conv2d.wgsl");
/// Work per invocation: `px` output pixels × `ocb` blocks of 4 output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Output pixels per invocation (`PX` in the shader).
    pub px: u32,
    /// Output-channel blocks of 4 per invocation (`OCB` in the shader).
    pub ocb: u32,
}

impl Tile {
    /// The default tile, chosen by measurement on lavapipe (ref-cnn, batch 32, 2 cores; ms):
    /// 4×1 495, 2×2 545, 4×2 367, 8×1 388, 4×4 316, 8×2 350, 8×4 578, 4×8 605, 16×2 892.
    /// Larger tiles spill registers; smaller ones issue more (gathered) loads per FMA.
    pub const DEFAULT: Self = Self { px: 4, ocb: 4 };
    /// The default tile of the pointwise (1×1) pipeline, measured on lavapipe (lite0-256,
    /// batch 8, 2 cores; whole-model ms): 4×4 595, 8×4 861, 4×8 875, 8×2 523–540, 6×4 906,
    /// 16×1 631, 8×1 828, 4×2 648.
    pub const POINTWISE: Self = Self { px: 8, ocb: 2 };

    /// The tile to compile: `KERNELS_CONV_TILE=PXxOCB` (e.g. `4x2`) overrides the default, for
    /// tuning on a new GPU.
    pub fn from_env() -> Self {
        Self::from_env_var("KERNELS_CONV_TILE", Self::DEFAULT)
    }

    /// The tile named by environment variable `var` (`PXxOCB`), or `default`.
    pub fn from_env_var(var: &str, default: Self) -> Self {
        std::env::var(var)
            .ok()
            .and_then(|v| {
                let (a, b) = v.split_once('x')?;
                Some(Self {
                    px: a.trim().parse().ok()?,
                    ocb: b.trim().parse().ok()?,
                })
            })
            .filter(|t| (1..=16).contains(&t.px) && (1..=8).contains(&t.ocb))
            .unwrap_or(default)
    }

    /// The shader source specialised for this tile.
    pub fn source(self) -> String {
        SOURCE
            .replace(
                "const PX: u32 = 4u;",
                &format!("const PX: u32 = {}u;", self.px),
            )
            .replace(
                "const OCB: u32 = 1u;",
                &format!("const OCB: u32 = {}u;", self.ocb),
            )
    }

    /// [`Self::source`] with the kernel side fixed to 1, for 1×1 convolutions: the compiler
    /// drops the window loops.
    pub fn pointwise_source(self) -> String {
        self.source().replace("let kk = p.kernel;", "let kk = 1u;")
    }

    /// Output channels rounded up to whole invocation tiles (weights and bias are padded to it).
    pub fn padded_out_channels(self, out_c: usize) -> usize {
        out_c.div_ceil(4 * self.ocb as usize) * 4 * self.ocb as usize
    }
}

/// Mirrors `Params` in conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Input height (without border).
    pub in_h: u32,
    /// Input width (without border).
    pub in_w: u32,
    /// Input channels / 4, rounded up.
    pub in_c4: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Output channels / 4, rounded up.
    pub out_c4: u32,
    /// Zero border of the output.
    pub out_border: u32,
    /// Kernel side.
    pub kernel: u32,
    /// Stride.
    pub stride: u32,
    /// The input's zero border (at least every side's padding).
    pub in_border: u32,
    /// 0 none, 1 ReLU, 2 ReLU6.
    pub act: u32,
    /// `ceil(out_w / PX)`.
    pub x_groups: u32,
    /// `in_border` − top padding.
    pub off_y: u32,
    /// `in_border` − left padding.
    pub off_x: u32,
    /// 1: add `res` after the activation (the inverted-residual skip, fused).
    pub res: u32,
    /// Zero border of the residual.
    pub res_border: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Workgroups for `p`: x (and z on overflow) cover (n, oy, x-group); y the output-channel tile.
pub fn workgroups(p: &Params, tile: Tile) -> [u32; 3] {
    let (x, z) = grid_1d(p.batch * p.out_h * p.x_groups);
    [x, p.out_c4.div_ceil(tile.ocb), z]
}

/// Repacks a `[out, in, k, k]` weight into the shader's `[oc4][ky][kx][ic4][4 × vec4]` layout,
/// zero-padded to `padded_out` output channels.
pub fn pack_weights(
    weight: &[f32],
    out_c: usize,
    in_c: usize,
    k: usize,
    padded_out: usize,
) -> Vec<f32> {
    let (oc4, ic4) = (padded_out.div_ceil(4), in_c.div_ceil(4));
    let mut packed = vec![0.0; oc4 * k * k * ic4 * 16];
    for o in 0..out_c {
        for i in 0..in_c {
            for ky in 0..k {
                for kx in 0..k {
                    let dst =
                        (((((o / 4) * k + ky) * k + kx) * ic4 + i / 4) * 4 + i % 4) * 4 + o % 4;
                    packed[dst] = weight[((o * in_c + i) * k + ky) * k + kx];
                }
            }
        }
    }
    packed
}
