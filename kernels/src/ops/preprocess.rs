//! Wrapper of `shaders/preprocess.wgsl`: raw frames → normalised NHWC4 model input.

use bytemuck::{Pod, Zeroable};

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/preprocess.wgsl");

/// Mirrors `Params` in preprocess.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Model input width.
    pub out_w: u32,
    /// Model input height.
    pub out_h: u32,
    /// Zero border of the output (the first conv's padding).
    pub out_border: u32,
    /// Model channels (1 or 3).
    pub channels: u32,
    /// Frames in this call.
    pub batch: u32,
    /// 1: fit the region keeping its aspect ratio (`Resize::Fit`); 0: stretch.
    pub fit: u32,
    /// Padding.
    pub _pad: [u32; 2],
    /// Per-channel mean (0 past `channels`).
    pub mean: [f32; 4],
    /// Per-channel 1/std (0 past `channels`).
    pub inv_std: [f32; 4],
}

/// Mirrors `FrameDesc` in preprocess.wgsl: where one frame's bytes are and its ROI.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct FrameDesc {
    /// Byte offset in the pixel buffer (a multiple of 4).
    pub offset: u32,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// 1, 3 or 4.
    pub bytes_per_pixel: u32,
    /// ROI left.
    pub roi_x: u32,
    /// ROI top.
    pub roi_y: u32,
    /// ROI width.
    pub roi_w: u32,
    /// ROI height.
    pub roi_h: u32,
}

/// Workgroups for `p` (`@workgroup_size(8, 8, 1)`, z = frame).
pub fn workgroups(p: &Params) -> [u32; 3] {
    [p.out_w.div_ceil(8), p.out_h.div_ceil(8), p.batch]
}
