//! Wrappers of `shaders/bank_distance.wgsl` and `shaders/bank_score.wgsl`: `Layer::MemoryBank`,
//! the anomaly model's nearest-neighbour head (PatchCore).

use bytemuck::{Pod, Zeroable};

/// The distance kernel's source.
pub const DISTANCE_SOURCE: &str = include_str!("../../shaders/bank_distance.wgsl");
/// The score kernel's source.
pub const SCORE_SOURCE: &str = include_str!("../../shaders/bank_score.wgsl");

/// Positions per distance workgroup (8 rows of invocations × 4).
pub const TILE_POSITIONS: u32 = 32;
/// Entries per distance workgroup step (8 columns of invocations × 4).
pub const TILE_ENTRIES: u32 = 32;
/// Most support entries the score kernel keeps (1 + its `K`).
pub const MAX_NEIGHBORS: u32 = 16;

/// Mirrors `Params` in bank_distance.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct DistanceParams {
    /// Images × positions in this call.
    pub positions: u32,
    /// Feature vec4s per position and per entry.
    pub c4: u32,
    /// Bank entries.
    pub entries: u32,
    /// Entries per slice (a multiple of [`TILE_ENTRIES`]).
    pub slice_len: u32,
    /// Slices of the bank (workgroups along y).
    pub slices: u32,
    /// Feature map height.
    pub h: u32,
    /// Feature map width.
    pub w: u32,
    /// Model input width in pixels.
    pub in_w: u32,
    /// Model input height in pixels.
    pub in_h: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Mirrors `Params` in bank_score.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ScoreParams {
    /// Images in this call.
    pub batch: u32,
    /// Feature map height.
    pub h: u32,
    /// Feature map width.
    pub w: u32,
    /// Feature vec4s per position.
    pub c4: u32,
    /// Bank entries.
    pub entries: u32,
    /// Slices of the distance pass.
    pub slices: u32,
    /// Support size of the reweighting (1 = none).
    pub neighbors: u32,
    /// Offset of the heatmaps in the output buffer (batch × classes).
    pub heat_offset: u32,
    /// Model input width in pixels.
    pub in_w: u32,
    /// Model input height in pixels.
    pub in_h: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// How the bank is cut into slices: enough slices for parallel work on a big GPU, each at
/// least 256 entries, at most 32; `(slices, slice_len)`.
pub fn slicing(entries: u32) -> (u32, u32) {
    let slices = entries.div_ceil(256).clamp(1, 32);
    let len = entries
        .div_ceil(slices)
        .next_multiple_of(TILE_ENTRIES)
        .max(TILE_ENTRIES);
    (entries.div_ceil(len).max(1), len)
}

/// Workgroups of the distance pass: x (+ 65535·z) = tile of 32 positions, y = slice.
pub fn distance_workgroups(p: &DistanceParams) -> [u32; 3] {
    let tiles = p.positions.div_ceil(TILE_POSITIONS).max(1);
    let x = tiles.min(65_535);
    [x, p.slices.max(1), tiles.div_ceil(x)]
}

/// One workgroup per image.
pub fn score_workgroups(p: &ScoreParams) -> [u32; 3] {
    [p.batch.max(1), 1, 1]
}

/// The bank `[entries][features]` as `[entries][c4]` vec4s, padded channels 0.
pub fn pack_bank(bank: &[f32], entries: usize, features: usize) -> Vec<f32> {
    let c4 = features.div_ceil(4);
    let mut out = vec![0.0; entries * c4 * 4];
    for e in 0..entries {
        out[e * c4 * 4..e * c4 * 4 + features]
            .copy_from_slice(&bank[e * features..(e + 1) * features]);
    }
    out
}
