//! Wrapper of `shaders/softmax.wgsl`: probabilities and the heatmap class.

use bytemuck::{Pod, Zeroable};

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/softmax.wgsl");

/// Mirrors `Params` in softmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Classes.
    pub classes: u32,
    /// 1 when the defect max pool chose `heat_class` (softmax leaves it).
    pub keep_class: u32,
    /// Padding.
    pub _pad: u32,
}

/// Workgroups for `p` (one invocation per image).
pub fn workgroups(p: &Params) -> [u32; 3] {
    [p.batch.div_ceil(super::WORKGROUP).max(1), 1, 1]
}
