//! Wrapper of `shaders/conv2d.wgsl`: fused conv2d + bias (+ ReLU) on NHWC4 activations.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/conv2d.wgsl");
/// Output pixels per invocation (`PX` in the shader).
pub const PX: u32 = 4;

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
    /// Padding (= the input's border).
    pub pad: u32,
    /// 1 to apply ReLU.
    pub relu: u32,
    /// `ceil(out_w / PX)`.
    pub x_groups: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Workgroups for `p`: x (and z on overflow) cover (n, oy, x-group); y is the oc4 block.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, z) = grid_1d(p.batch * p.out_h * p.x_groups);
    [x, p.out_c4, z]
}

/// Repacks a `[out, in, k, k]` weight into the shader's `[oc4][ky][kx][ic4][4 × vec4]` layout.
pub fn pack_weights(weight: &[f32], out_c: usize, in_c: usize, k: usize) -> Vec<f32> {
    let (oc4, ic4) = (out_c.div_ceil(4), in_c.div_ceil(4));
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
