//! Wrapper of `shaders/linear.wgsl`: the classifier.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/linear.wgsl");

/// Mirrors `Params` in linear.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Input features / 4, rounded up.
    pub in4: u32,
    /// Output features (classes).
    pub out_features: u32,
    /// Padding.
    pub _pad: u32,
}

/// Workgroups for `p`.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.out_features);
    [x, y, 1]
}

/// Repacks a `[out, in]` weight into `[out][in4]` vec4s, zero-padded.
pub fn pack_weights(weight: &[f32], out_f: usize, in_f: usize) -> Vec<f32> {
    let in4 = in_f.div_ceil(4);
    let mut packed = vec![0.0; out_f * in4 * 4];
    for o in 0..out_f {
        packed[o * in4 * 4..o * in4 * 4 + in_f].copy_from_slice(&weight[o * in_f..(o + 1) * in_f]);
    }
    packed
}
