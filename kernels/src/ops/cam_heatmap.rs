//! Wrapper of `shaders/cam_heatmap.wgsl`: class-activation heatmap.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/cam_heatmap.wgsl");

/// Mirrors `Params` in cam_heatmap.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Feature map height.
    pub h: u32,
    /// Feature map width.
    pub w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
    /// Where the heatmaps start in the output buffer (in f32s).
    pub out_offset: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Workgroups for `p`.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.h * p.w);
    [x, y, 1]
}
