//! Wrapper of `shaders/relu.wgsl`: in-place ReLU for a ReLU not fused into a conv.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/relu.wgsl");

/// Mirrors `Params` in relu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// vec4 count to process.
    pub len: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Workgroups for `p`.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.len);
    [x, y, 1]
}
