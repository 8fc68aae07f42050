//! Wrapper of `shaders/max_pool.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/max_pool.wgsl");

/// Mirrors `Params` in max_pool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Input height.
    pub in_h: u32,
    /// Input width.
    pub in_w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Zero border of the output.
    pub out_border: u32,
    /// Window side.
    pub kernel: u32,
    /// Stride.
    pub stride: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Workgroups for `p`.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.out_h * p.out_w * p.c4);
    [x, y, 1]
}
