//! Wrapper of `shaders/pointwise_gemm.wgsl`: a 1×1 convolution as a workgroup-tiled matrix
//! product with the tiles in workgroup memory, fused with bias, activation and the residual add.
//! Used where the adapter table ([`super::tuning`]) says so (real GPUs); CPU rasterisers keep
//! the register-tiled direct kernel of `conv2d.wgsl`.

use bytemuck::{Pod, Zeroable};

/// The shader source (tile constants substituted by [`GemmTile::source`]).
pub const SOURCE: &str = concat!(
    include_str!("../../shaders/pointwise_common.wgsl"),
    include_str!("../../shaders/pointwise_gemm.wgsl")
);

/// The workgroup tile of the pointwise GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    /// Invocations along pixels.
    pub tm: u32,
    /// Invocations along output vec4s.
    pub tn: u32,
    /// Pixels per invocation.
    pub rm: u32,
    /// Output vec4s per invocation.
    pub rn: u32,
    /// Input vec4s per step through workgroup memory.
    pub bk: u32,
}

impl GemmTile {
    /// 8×8 invocations, 4 pixels × 2 output vec4s each: a 32-pixel × 64-channel tile, K in
    /// steps of 16 channels (6.5 KiB of workgroup memory). Measured on an NVIDIA H200 (Vulkan,
    /// lite0-256 through `kernels/examples/engine_bench.rs`, one run, batch 1 ms / batch 32
    /// images/s / batch 128 images/s), TMxTNxRMxRNxBK: 8x8x4x2x4 0.915 / 10.2k / 12.0k;
    /// 16x8x4x2x8 0.932 / 10.0k / 11.6k; 8x8x4x2x8 0.968 / 8.7k / 10.0k; 8x8x2x2x8
    /// 0.871 / 7.7k / 8.8k; 8x8x4x4x4 1.18 / 9.3k / 11.0k; 8x16x4x2x8 1.02 / 9.0k / 10.0k;
    /// 16x16x4x2x8 0.976 / 8.6k / 10.1k; 8x8x4x4x8 1.35 / 6.6k / 7.5k; 16x16x4x4x4
    /// 1.47 / 7.2k / 7.8k; the direct 8×2 register tile 1.54 / 6.3k / 6.6k.
    pub const DEFAULT: Self = Self {
        tm: 8,
        tn: 8,
        rm: 4,
        rn: 2,
        bk: 4,
    };

    /// The tile for single-frame calls on GPUs (the station's latency): 8×8 invocations, 2
    /// pixels × 2 output vec4s each (16 pixels × 64 channels), K in steps of 32 channels; twice
    /// the workgroups of [`Self::DEFAULT`] on the small late-stage maps. Measured in the same
    /// H200 run as the list above: batch 1 0.871 ms against 0.915 ms for the default, which
    /// keeps batches (10.2k vs 7.7k images/s at batch 32). Same output tile width, so the
    /// weights are padded alike and one bind group serves both pipelines.
    pub const LATENCY: Self = Self {
        tm: 8,
        tn: 8,
        rm: 2,
        rn: 2,
        bk: 8,
    };

    /// Invocations per workgroup.
    pub fn invocations(self) -> u32 {
        self.tm * self.tn
    }

    /// Pixels per workgroup tile.
    pub fn bm(self) -> u32 {
        self.tm * self.rm
    }

    /// Output vec4s per workgroup tile.
    pub fn bn4(self) -> u32 {
        self.tn * self.rn
    }

    /// Bytes of workgroup memory the shader declares.
    pub fn workgroup_bytes(self) -> u32 {
        (self.bm() * (self.bk + 1) + self.bn4() * (self.bk * 4 + 1)) * 16
    }

    /// Whether the shader can be built for this tile on a device with `limits`: the
    /// cooperative loads need whole rounds of the workgroup.
    pub fn fits(self, limits: &wgpu::Limits) -> bool {
        let wg = self.invocations();
        wg > 0
            && self.rm > 0
            && self.rn > 0
            && self.bk > 0
            && (self.bm() * self.bk) % wg == 0
            && (self.bn4() * self.bk * 4) % wg == 0
            && wg <= limits.max_compute_invocations_per_workgroup
            && wg <= limits.max_compute_workgroup_size_x
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
            && self.rm * self.rn <= 32
    }

    /// The shader source for this tile.
    pub fn source(self) -> String {
        SOURCE
            .replace(
                "const TM: u32 = 8u;",
                &format!("const TM: u32 = {}u;", self.tm),
            )
            .replace(
                "const TN: u32 = 8u;",
                &format!("const TN: u32 = {}u;", self.tn),
            )
            .replace(
                "const RM: u32 = 4u;",
                &format!("const RM: u32 = {}u;", self.rm),
            )
            .replace(
                "const RN: u32 = 2u;",
                &format!("const RN: u32 = {}u;", self.rn),
            )
            .replace(
                "const BK: u32 = 8u;",
                &format!("const BK: u32 = {}u;", self.bk),
            )
            .replace(
                "@workgroup_size(64, 1, 1)",
                &format!("@workgroup_size({}, 1, 1)", self.invocations()),
            )
    }

    /// Output channels rounded up to whole workgroup tiles (weights and bias are padded to it).
    pub fn padded_out_channels(self, out_c: usize) -> usize {
        out_c.div_ceil(4 * self.bn4() as usize) * 4 * self.bn4() as usize
    }
}

/// The bind group layout both GEMM pipelines (the batch tile and the latency tile) share, so one
/// bind group per step serves either: uniform params, then src, weights, bias (read), dst
/// (read-write), res (read), part (read-write).
pub fn bind_group_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
    let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("kernels::pointwise_gemm::layout"),
        entries: &[
            entry(0, wgpu::BufferBindingType::Uniform),
            entry(1, storage(true)),
            entry(2, storage(true)),
            entry(3, storage(true)),
            entry(4, storage(false)),
            entry(5, storage(true)),
            entry(6, storage(false)),
        ],
    })
}

/// Mirrors `Params` in pointwise_gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Height (input = output).
    pub h: u32,
    /// Width (input = output).
    pub w: u32,
    /// Input channels / 4, rounded up.
    pub in_c4: u32,
    /// Output channels / 4, rounded up.
    pub out_c4: u32,
    /// Zero border of the input.
    pub in_border: u32,
    /// Zero border of the output.
    pub out_border: u32,
    /// 0 none, 1 ReLU, 2 ReLU6.
    pub act: u32,
    /// 1: add the residual after the activation.
    pub res: u32,
    /// Zero border of the residual.
    pub res_border: u32,
    /// Slices of K (1: the whole product and its epilogue in one dispatch; more: raw partial
    /// sums into the split buffer, summed by `pointwise_split_reduce.wgsl`).
    pub splits: u32,
    /// Input vec4s per slice (a multiple of the tile's `bk`; at least `in_c4` when unsplit).
    pub k_chunk: u32,
}

/// The shader that sums a split product's slices and applies the epilogue.
pub const REDUCE_SOURCE: &str = concat!(
    include_str!("../../shaders/pointwise_common.wgsl"),
    include_str!("../../shaders/pointwise_split_reduce.wgsl")
);

/// When a 1×1 convolution's product is cut along K (split-K): a dispatch that would fill fewer
/// than `min_workgroups` workgroups (at batch 1 the long-K projections of the last stages fill
/// 16) runs as up to `max_splits` slices of at least `min_steps` K-steps each, over
/// proportionally more workgroups, then one reduce dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitK {
    /// Workgroups below which a dispatch is split (0: never).
    pub min_workgroups: u32,
    /// Most slices.
    pub max_splits: u32,
    /// Fewest K-steps (`bk` input vec4s each) per slice.
    pub min_steps: u32,
}

impl SplitK {
    /// Never split.
    pub const OFF: Self = Self {
        min_workgroups: 0,
        max_splits: 1,
        min_steps: 1,
    };

    /// The candidate for GPUs: aim for 128 workgroups, at most 8 slices of 4 K-steps or more.
    pub const GPU: Self = Self {
        min_workgroups: 128,
        max_splits: 8,
        min_steps: 4,
    };

    /// Parses `off` or `MINxMAXxSTEPS` (e.g. `128x8x4`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s == "off" {
            return Some(Self::OFF);
        }
        let v: Vec<u32> = s
            .split('x')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        match v[..] {
            [min_workgroups, max_splits, min_steps] if max_splits >= 1 && min_steps >= 1 => {
                Some(Self {
                    min_workgroups,
                    max_splits,
                    min_steps,
                })
            }
            _ => None,
        }
    }

    /// `(splits, k_chunk)` for the product `p` describes (its batch already set).
    pub fn choose(self, p: &Params, tile: GemmTile) -> (u32, u32) {
        let steps = p.in_c4.div_ceil(tile.bk).max(1);
        let whole = (1, steps * tile.bk);
        let [x, y, z] = unsplit_workgroups(p, tile);
        let groups = x * y * z;
        if self.max_splits <= 1 || groups >= self.min_workgroups || z > 1 {
            return whole;
        }
        let want = self
            .min_workgroups
            .div_ceil(groups)
            .min(self.max_splits)
            .min(steps / self.min_steps.max(1));
        if want <= 1 {
            return whole;
        }
        // Equal slices, none empty.
        let per = steps.div_ceil(want);
        (steps.div_ceil(per), per * tile.bk)
    }

    /// The vec4s of partial sums `p` needs in the split buffer (0 when unsplit).
    pub fn partial_vec4s(self, p: &Params, tile: GemmTile) -> u64 {
        let (splits, _) = self.choose(p, tile);
        if splits <= 1 {
            return 0;
        }
        splits as u64 * (p.batch * p.h * p.w) as u64 * p.out_c4 as u64
    }
}

fn unsplit_workgroups(p: &Params, tile: GemmTile) -> [u32; 3] {
    let tiles = (p.batch * p.h * p.w).div_ceil(tile.bm()).max(1);
    let x = tiles.min(65_535);
    [x, p.out_c4.div_ceil(tile.bn4()), tiles.div_ceil(x)]
}

/// Workgroups for `p`: x (+ x·z on overflow) = pixel tile, y = output-channel tile; split, z =
/// the K slice.
pub fn workgroups(p: &Params, tile: GemmTile) -> [u32; 3] {
    let [x, y, z] = unsplit_workgroups(p, tile);
    if p.splits > 1 {
        [x, y, p.splits]
    } else {
        [x, y, z]
    }
}

/// Workgroups of the reduce pass for `p`: one invocation per output vec4; none unsplit.
pub fn reduce_workgroups(p: &Params) -> [u32; 3] {
    if p.splits <= 1 {
        return [0, 0, 0];
    }
    let (x, y) = super::grid_1d(p.batch * p.h * p.w * p.out_c4);
    [x, y, 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(batch: u32, hw: u32, in_c: u32, out_c: u32) -> Params {
        Params {
            batch,
            h: hw,
            w: hw,
            in_c4: in_c.div_ceil(4),
            out_c4: out_c.div_ceil(4),
            in_border: 0,
            out_border: 0,
            act: 0,
            res: 0,
            res_border: 0,
            splits: 1,
            k_chunk: 0,
        }
    }

    #[test]
    fn split_k_cuts_only_the_small_long_k_products() {
        let (t, k) = (GemmTile::DEFAULT, SplitK::GPU);
        // Lite0's 672 → 112 projection on 16×16 cells at batch 1: 8 × 2 = 16 workgroups, 42
        // K-steps → 7 slices of 6 steps (112 workgroups).
        let p = product(1, 16, 672, 112);
        assert_eq!(unsplit_workgroups(&p, t), [8, 2, 1]);
        assert_eq!(k.choose(&p, t), (7, 24));
        let mut split = p;
        (split.splits, split.k_chunk) = k.choose(&p, t);
        assert_eq!(workgroups(&split, t), [8, 2, 7]);
        assert_eq!(reduce_workgroups(&split), [112, 1, 1]);
        assert_eq!(k.partial_vec4s(&p, t), 7 * 256 * 28);
        // At batch 32 it fills 512 workgroups: whole.
        assert_eq!(k.choose(&product(32, 16, 672, 112), t), (1, 168));
        // A short K (40 → 240 at 32×32: 3 steps) is never cut below 4 steps a slice.
        assert_eq!(k.choose(&product(1, 32, 40, 240), t), (1, 12));
        // Off: whole, and the reduce pass dispatches nothing.
        assert_eq!(SplitK::OFF.choose(&p, t), (1, 168));
        assert_eq!(reduce_workgroups(&p), [0, 0, 0]);
        assert_eq!(SplitK::parse("128x8x4"), Some(SplitK::GPU));
        assert_eq!(SplitK::parse("off"), Some(SplitK::OFF));
        assert_eq!(SplitK::parse("128x0x4"), None);
    }
}
