//! Wrapper of `shaders/defect_pool.wgsl`: `Layer::DefectMaxPool` and its margin heatmap, with
//! the linear classifier after it and the softmax in its epilogue.

use bytemuck::{Pod, Zeroable};

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/defect_pool.wgsl");

/// Mirrors `Params` in defect_pool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Score map height.
    pub h: u32,
    /// Score map width.
    pub w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
    /// Classes (channels).
    pub classes: u32,
    /// Model input width in pixels.
    pub in_w: u32,
    /// Model input height in pixels.
    pub in_h: u32,
    /// Offset of the heatmaps in the output buffer (batch × classes).
    pub heat_offset: u32,
    /// The linear classifier's input vec4s (= `c4`).
    pub in4: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// One workgroup per image.
pub fn workgroups(p: &Params) -> [u32; 3] {
    [p.batch.max(1), 1, 1]
}
