//! Wrapper of `shaders/local_features.wgsl`: up to [`MAX_SOURCES`] sources of a
//! `Layer::LocalFeatures` in one dispatch.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/local_features.wgsl");

/// Sources one dispatch reads (the shader's `src0` … `src3`).
pub const MAX_SOURCES: usize = 4;

/// Mirrors `Source` in local_features.wgsl: one activation the dispatch averages.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct Source {
    /// Height.
    pub h: u32,
    /// Width.
    pub w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
    /// Zero border.
    pub border: u32,
    /// Channels.
    pub c: u32,
    /// Pooling stride.
    pub stride: u32,
    /// First destination channel.
    pub c_offset: u32,
    /// Index of its first vec4 among all this dispatch's sources' vec4s of one pixel.
    pub first4: u32,
}

/// Mirrors `Params` in local_features.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
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
    /// Sources in use (1..=4).
    pub sources: u32,
    /// Σ c4 over the sources in use.
    pub total4: u32,
    /// The sources (unused entries zero).
    pub src: [Source; MAX_SOURCES],
}

/// One invocation per (n, y, x, source vec4).
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.dst_h * p.dst_w * p.total4);
    [x, y, 1]
}
