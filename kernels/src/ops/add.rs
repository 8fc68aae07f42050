//! Wrapper of `shaders/add.wgsl`: the residual add, in place.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/add.wgsl");

/// Mirrors `Params` in add.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Height.
    pub h: u32,
    /// Width.
    pub w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
    /// Zero border of the destination (the running activation).
    pub dst_border: u32,
    /// Zero border of the added activation.
    pub src_border: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// One invocation per vec4 of the interior.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.h * p.w * p.c4);
    [x, y, 1]
}
