//! Wrapper of `shaders/depthwise.wgsl`: depthwise conv2d + bias (+ ReLU / ReLU6), NHWC4.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/depthwise.wgsl");
/// Output pixels per invocation (`PX` in the shader) by default.
pub const PX: u32 = 4;

/// Output pixels per invocation: `KERNELS_DEPTHWISE_PX` (1..=16) overrides [`PX`], for tuning.
pub fn px_from_env() -> u32 {
    std::env::var("KERNELS_DEPTHWISE_PX")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| (1..=16).contains(p))
        .unwrap_or(PX)
}

/// The shader specialised for `px` pixels per invocation and, if given, a fixed
/// `(kernel, stride)` (the compiler then unrolls the window loops).
pub fn source(px: u32, fixed: Option<(u32, u32)>) -> String {
    let s = SOURCE
        .replace("const PX: u32 = 4u;", &format!("const PX: u32 = {px}u;"))
        .replace(
            "const SPAN: u32 = 13u;",
            &format!("const SPAN: u32 = {}u;", (px - 1) * 2 + 7),
        );
    match fixed {
        Some((k, stride)) => s
            .replace("p.kernel", &format!("{k}u"))
            .replace("p.stride", &format!("{stride}u")),
        None => s,
    }
}

/// The `(kernel, stride)` pairs compiled as specialised pipelines (EfficientNet-Lite's).
pub const SPECIALISED: [(u32, u32); 4] = [(3, 1), (3, 2), (5, 1), (5, 2)];

/// Mirrors `Params` in depthwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Input height (without border).
    pub in_h: u32,
    /// Input width (without border).
    pub in_w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Zero border of the output.
    pub out_border: u32,
    /// Kernel side.
    pub kernel: u32,
    /// Stride.
    pub stride: u32,
    /// Zero border of the input.
    pub in_border: u32,
    /// `in_border` − top padding.
    pub off_y: u32,
    /// `in_border` − left padding.
    pub off_x: u32,
    /// 0 none, 1 ReLU, 2 ReLU6.
    pub act: u32,
    /// `ceil(out_w / PX)`.
    pub x_groups: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// Workgroups: x (and z on overflow) cover (n, oy, x-group); y the channel block.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.out_h * p.x_groups * p.c4);
    [x, y, 1]
}

/// Repacks a `[c, 1, k, k]` weight into the shader's `[c4][ky][kx][4]` layout.
pub fn pack_weights(weight: &[f32], c: usize, k: usize) -> Vec<f32> {
    let c4 = c.div_ceil(4);
    let mut packed = vec![0.0; c4 * k * k * 4];
    for ch in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                packed[(((ch / 4) * k + ky) * k + kx) * 4 + ch % 4] =
                    weight[(ch * k + ky) * k + kx];
            }
        }
    }
    packed
}
