//! Wrapper of `shaders/local_features.wgsl`: one source of a `Layer::LocalFeatures`.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/local_features.wgsl");

/// Mirrors `Params` in local_features.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Source height.
    pub src_h: u32,
    /// Source width.
    pub src_w: u32,
    /// Source channels / 4, rounded up.
    pub src_c4: u32,
    /// Source zero border.
    pub src_border: u32,
    /// Source channels.
    pub src_c: u32,
    /// Pooling stride.
    pub stride: u32,
    /// Window side.
    pub kernel: u32,
    /// Destination height.
    pub dst_h: u32,
    /// Destination width.
    pub dst_w: u32,
    /// Destination channels / 4, rounded up.
    pub dst_c4: u32,
    /// Destination zero border.
    pub dst_border: u32,
    /// First destination channel.
    pub c_offset: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// One invocation per (n, y, x, source vec4).
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.dst_h * p.dst_w * p.src_c4);
    [x, y, 1]
}
