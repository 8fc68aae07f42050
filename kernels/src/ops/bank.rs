//! Wrappers of the memory-bank kernels, `Layer::MemoryBank` (the anomaly model's
//! nearest-neighbour head, PatchCore), in dispatch order: `bank_distance` (split over bank
//! slices), `bank_reduce` (folds many slices into one; only where [`BankSplit`] cuts the bank
//! finely), `bank_select` (per image: score map, heatmap, winning position and entry),
//! `bank_support` (the winning entry's nearest other entries, split over workgroups) and
//! `bank_finish` (merge, reweighting, logits).

use bytemuck::{Pod, Zeroable};

/// The distance kernel's source.
pub const DISTANCE_SOURCE: &str = include_str!("../../shaders/bank_distance.wgsl");
/// The slice-reduction kernel's source.
pub const REDUCE_SOURCE: &str = include_str!("../../shaders/bank_reduce.wgsl");
/// The per-image selection kernel's source.
pub const SELECT_SOURCE: &str = concat!(
    include_str!("../../shaders/bank_common.wgsl"),
    include_str!("../../shaders/bank_select.wgsl")
);
/// The support-search kernel's source.
pub const SUPPORT_SOURCE: &str = concat!(
    include_str!("../../shaders/bank_common.wgsl"),
    include_str!("../../shaders/bank_support.wgsl")
);
/// The merge-and-reweight kernel's source.
pub const FINISH_SOURCE: &str = concat!(
    include_str!("../../shaders/bank_common.wgsl"),
    include_str!("../../shaders/bank_finish.wgsl")
);
/// Candidates each support workgroup keeps (`K` in the shaders).
pub const SUPPORT_K: u32 = 15;

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

/// Mirrors `Params` in bank_select.wgsl, bank_support.wgsl and bank_finish.wgsl.
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
    /// Slices to scan per position (1 after `bank_reduce`).
    pub slices: u32,
    /// Support size of the reweighting (1 = none).
    pub neighbors: u32,
    /// Offset of the heatmaps in the output buffer (batch × classes).
    pub heat_offset: u32,
    /// Model input width in pixels.
    pub in_w: u32,
    /// Model input height in pixels.
    pub in_h: u32,
    /// Slices per position in the partial buffer.
    pub stride: u32,
    /// Workgroups per image of the support search.
    pub groups: u32,
}

/// Mirrors `Params` in bank_reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ReduceParams {
    /// Images × positions in this call.
    pub positions: u32,
    /// Slices to fold.
    pub slices: u32,
    /// Slices per position in the partial buffer.
    pub stride: u32,
    /// Padding.
    pub _pad: u32,
}

/// How finely the bank is cut for the distance pass: a CPU rasteriser wants few long slices
/// (its threads are few), a GPU many short ones so that thousands of workgroups fill it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BankSplit {
    /// Fewest entries per slice.
    pub min_slice: u32,
    /// Most slices.
    pub max_slices: u32,
    /// Distance workgroups to aim for per call (position tiles × slices); 0: as many slices as
    /// `min_slice` allows, up to `max_slices`, whatever the batch.
    pub target_groups: u32,
    /// Entries per support-search workgroup (at least).
    pub support_len: u32,
    /// Most support-search workgroups per image.
    pub max_support_groups: u32,
}

impl BankSplit {
    /// Lavapipe and other CPU rasterisers: up to 32 slices of ≥ 256 entries, no reduce pass.
    pub const CPU: Self = Self {
        min_slice: 256,
        max_slices: 32,
        target_groups: 0,
        support_len: 1024,
        max_support_groups: 64,
    };
    /// GPUs: ~8k distance workgroups per call, slices of ≥ 128 entries, then `bank_reduce`.
    pub const GPU: Self = Self {
        min_slice: 128,
        max_slices: 1024,
        target_groups: 8192,
        support_len: 256,
        max_support_groups: 256,
    };

    /// `(slices, slice_len)` for `entries` and `positions` positions in the call.
    pub fn slicing(self, entries: u32, positions: u32) -> (u32, u32) {
        let by_size = entries
            .div_ceil(self.min_slice.max(1))
            .clamp(1, self.max_slices.max(1));
        let slices = if self.target_groups == 0 {
            by_size
        } else {
            let tiles = positions.div_ceil(TILE_POSITIONS).max(1);
            (self.target_groups / tiles).clamp(1, by_size)
        };
        let len = entries
            .div_ceil(slices)
            .next_multiple_of(TILE_ENTRIES)
            .max(TILE_ENTRIES);
        (entries.div_ceil(len).max(1), len)
    }

    /// Whether the slices are folded by `bank_reduce` before `bank_select`.
    pub fn reduces(self) -> bool {
        self.target_groups > 0
    }

    /// Support-search workgroups per image.
    pub fn support_groups(self, entries: u32) -> u32 {
        entries
            .div_ceil(self.support_len.max(1))
            .clamp(1, self.max_support_groups.max(1))
    }
}

/// How a CPU rasteriser cuts the bank ([`BankSplit::CPU`]); `(slices, slice_len)`.
pub fn slicing(entries: u32) -> (u32, u32) {
    BankSplit::CPU.slicing(entries, 1)
}

/// Workgroups of the distance pass: x (+ 65535·z) = tile of 32 positions, y = slice.
pub fn distance_workgroups(p: &DistanceParams) -> [u32; 3] {
    let tiles = p.positions.div_ceil(TILE_POSITIONS).max(1);
    let x = tiles.min(65_535);
    [x, p.slices.max(1), tiles.div_ceil(x)]
}

/// One workgroup per position (x + 65535·y).
pub fn reduce_workgroups(p: &ReduceParams) -> [u32; 3] {
    let n = p.positions.max(1);
    let x = n.min(65_535);
    [x, n.div_ceil(x), 1]
}

/// One workgroup per image (`bank_select`, `bank_finish`).
pub fn score_workgroups(p: &ScoreParams) -> [u32; 3] {
    [p.batch.max(1), 1, 1]
}

/// `groups` workgroups per image (`bank_support`).
pub fn support_workgroups(p: &ScoreParams) -> [u32; 3] {
    [p.groups.max(1), p.batch.max(1), 1]
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
