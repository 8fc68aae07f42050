//! Wrapper of `shaders/pointwise_gemm.wgsl`: a 1×1 convolution as a workgroup-tiled matrix
//! product with the tiles in workgroup memory, fused with bias, activation and the residual add.
//! Used where the adapter table ([`super::tuning`]) says so (real GPUs); CPU rasterisers keep
//! the register-tiled direct kernel of `conv2d.wgsl`.

use bytemuck::{Pod, Zeroable};

/// The shader source (tile constants substituted by [`GemmTile::source`]).
pub const SOURCE: &str = include_str!("../../shaders/pointwise_gemm.wgsl");

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
    /// Padding.
    pub _pad: [u32; 2],
}

/// Workgroups for `p`: x (+ x·z on overflow) = pixel tile, y = output-channel tile.
pub fn workgroups(p: &Params, tile: GemmTile) -> [u32; 3] {
    let tiles = (p.batch * p.h * p.w).div_ceil(tile.bm()).max(1);
    let x = tiles.min(65_535);
    [x, p.out_c4.div_ceil(tile.bn4()), tiles.div_ceil(x)]
}
