//! Which kernel variants and tile sizes an adapter gets: a small table keyed by the adapter's
//! device type and vendor, checked against its limits.
//!
//! | adapter | 1×1 convolutions | split-K | k×k conv tile | memory bank |
//! |---|---|---|---|---|
//! | CPU rasteriser (lavapipe, WARP, SwiftShader) | direct register tiles, `conv2d::Tile::POINTWISE`, residual add fused | off | `Tile::DEFAULT` | [`BankSplit::CPU`] |
//! | any GPU (NVIDIA measured on an H200; others take the same entry until measured) | [`GemmTile::DEFAULT`] in workgroup memory, residual add fused; single frames [`GemmTile::LATENCY`] | off until measured ([`SplitK::GPU`] is the candidate) | `Tile::DEFAULT` | [`BankSplit::GPU`] |
//!
//! Why: on a CPU rasteriser every invocation's load is a gather and workgroup barriers are
//! costly, so register tiles that maximise FMAs per load win (measured there, see
//! `conv2d::Tile`); a GPU wants coalesced loads shared through workgroup memory and thousands
//! of workgroups in flight. A tile the device's limits cannot hold falls back to the direct
//! kernel. Split-K cuts a GEMM dispatch that fills too few workgroups (at batch 1 the long-K
//! projections of the last stages fill 16) along K, then sums the slices in a second dispatch:
//! it trades one more dispatch for a shorter serial K loop, which only a GPU with many idle
//! cores can win, so it stays off until an H200 run shows that it pays
//! (`scripts/gpu-tune.sh` measures it). Environment overrides for tuning on a new adapter:
//! `KERNELS_POINTWISE=direct|gemm` or `gemm:TMxTNxRMxRNxBK`,
//! `KERNELS_LATENCY_TILE=off|TMxTNxRMxRNxBK` (the tile of single-frame calls), `KERNELS_SPLIT_K=off` or
//! `MINxMAXxSTEPS` (see [`SplitK`]), `KERNELS_BANK=cpu|gpu` (and `KERNELS_CONV_TILE`,
//! `KERNELS_POINTWISE_TILE`, `KERNELS_DEPTHWISE_PX` for the direct kernels).

use super::bank::BankSplit;
use super::conv2d::Tile;
use super::pointwise_gemm::{GemmTile, SplitK};

/// How the 1×1 convolutions run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pointwise {
    /// `conv2d.wgsl` with the kernel side fixed to 1, register tiles.
    Direct(Tile),
    /// `pointwise_gemm.wgsl`, workgroup-memory tiles (stride-1 unpadded 1×1 convolutions; others
    /// run the direct kernel).
    Gemm(GemmTile),
}

/// The kernel choices of one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// The tile of the k×k convolution kernel.
    pub conv_tile: Tile,
    /// The direct 1×1 tile (also the fallback where the GEMM does not apply).
    pub pointwise_tile: Tile,
    /// How 1×1 convolutions run.
    pub pointwise: Pointwise,
    /// When a GEMM dispatch is cut along K (GEMM only).
    pub split_k: SplitK,
    /// The GEMM tile of single-frame calls (GEMM only; `None`: the batch tile everywhere). Its
    /// output tile is as wide as the batch tile's (one weight padding for both).
    pub latency_tile: Option<GemmTile>,
    /// How the memory bank is cut.
    pub bank: BankSplit,
}

impl KernelConfig {
    /// The table's entry for a CPU rasteriser.
    pub const CPU: Self = Self {
        conv_tile: Tile::DEFAULT,
        pointwise_tile: Tile::POINTWISE,
        pointwise: Pointwise::Direct(Tile::POINTWISE),
        split_k: SplitK::OFF,
        latency_tile: None,
        bank: BankSplit::CPU,
    };
    /// The table's entry for a GPU.
    pub const GPU: Self = Self {
        conv_tile: Tile::DEFAULT,
        pointwise_tile: Tile::POINTWISE,
        pointwise: Pointwise::Gemm(GemmTile::DEFAULT),
        split_k: SplitK::OFF,
        latency_tile: Some(GemmTile::LATENCY),
        bank: BankSplit::GPU,
    };

    /// The table's entry for `info`, checked against `limits`, without environment overrides.
    pub fn for_adapter(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Self {
        let base = match info.device_type {
            wgpu::DeviceType::Cpu => Self::CPU,
            // Lavapipe reports itself as a CPU; an unknown software adapter named so too.
            _ if info.name.contains("llvmpipe") || info.name.contains("SwiftShader") => Self::CPU,
            _ => Self::GPU,
        };
        base.checked(limits)
    }

    /// The configuration for `device`: its adapter's table entry, then the environment
    /// overrides (for tuning on a new adapter).
    pub fn for_device(device: &wgpu::Device) -> Self {
        let limits = device.limits();
        let mut c = Self::for_adapter(&device.adapter_info(), &limits);
        c.conv_tile = Tile::from_env_var("KERNELS_CONV_TILE", c.conv_tile);
        c.pointwise_tile = Tile::from_env_var("KERNELS_POINTWISE_TILE", c.pointwise_tile);
        if let Ok(v) = std::env::var("KERNELS_POINTWISE") {
            let v = v.trim();
            if v == "direct" {
                c.pointwise = Pointwise::Direct(c.pointwise_tile);
            } else if v == "gemm" {
                c.pointwise = Pointwise::Gemm(GemmTile::DEFAULT);
            } else if let Some(t) = v.strip_prefix("gemm:").and_then(parse_gemm) {
                c.pointwise = Pointwise::Gemm(t);
            }
        }
        match std::env::var("KERNELS_LATENCY_TILE")
            .as_deref()
            .map(str::trim)
        {
            Ok("off") => c.latency_tile = None,
            Ok(v) => {
                if let Some(t) = parse_gemm(v) {
                    c.latency_tile = Some(t);
                }
            }
            Err(_) => {}
        }
        if let Some(k) = std::env::var("KERNELS_SPLIT_K")
            .ok()
            .and_then(|v| SplitK::parse(&v))
        {
            c.split_k = k;
        }
        match std::env::var("KERNELS_BANK").as_deref().map(str::trim) {
            Ok("cpu") => c.bank = BankSplit::CPU,
            Ok("gpu") => c.bank = BankSplit::GPU,
            _ => {}
        }
        if let Pointwise::Direct(_) = c.pointwise {
            c.pointwise = Pointwise::Direct(c.pointwise_tile);
        }
        c.checked(&limits)
    }

    /// The GEMM tile a call of `batch` images runs (None: the direct kernel).
    pub fn gemm_tile(&self, batch: u32) -> Option<GemmTile> {
        match self.pointwise {
            Pointwise::Gemm(t) if batch <= 1 => Some(self.latency_tile.unwrap_or(t)),
            Pointwise::Gemm(t) => Some(t),
            Pointwise::Direct(_) => None,
        }
    }

    /// This configuration with a GEMM tile the device cannot hold replaced by the direct kernel
    /// (a latency tile it cannot hold, or one of another output width, dropped).
    pub fn checked(mut self, limits: &wgpu::Limits) -> Self {
        if let (Pointwise::Gemm(t), Some(l)) = (self.pointwise, self.latency_tile)
            && (!l.fits(limits) || l.bn4() != t.bn4())
        {
            tracing::warn!(
                ?l,
                "the latency GEMM tile does not fit this device or the batch tile's width; \
                 using the batch tile"
            );
            self.latency_tile = None;
        }
        if let Pointwise::Gemm(t) = self.pointwise
            && !t.fits(limits)
        {
            tracing::warn!(
                ?t,
                "the pointwise GEMM tile does not fit this device; using the direct kernel"
            );
            self.pointwise = Pointwise::Direct(self.pointwise_tile);
        }
        self
    }

    /// A short description for reports: `"pointwise gemm 8x8x4x2x8, bank gpu"`.
    pub fn describe(&self) -> String {
        let pw = match self.pointwise {
            Pointwise::Direct(t) => format!("direct {}x{}", t.px, t.ocb),
            Pointwise::Gemm(t) => format!("gemm {}x{}x{}x{}x{}", t.tm, t.tn, t.rm, t.rn, t.bk),
        };
        let bank = if self.bank == BankSplit::CPU {
            "cpu".to_owned()
        } else if self.bank == BankSplit::GPU {
            "gpu".to_owned()
        } else {
            format!("{:?}", self.bank)
        };
        let latency = match (self.pointwise, self.latency_tile) {
            (Pointwise::Gemm(_), Some(t)) => {
                format!(" (1 frame: {}x{}x{}x{}x{})", t.tm, t.tn, t.rm, t.rn, t.bk)
            }
            _ => String::new(),
        };
        let split = match (self.pointwise, self.split_k) {
            (Pointwise::Gemm(_), k) if k.max_splits > 1 && k.min_workgroups > 0 => format!(
                ", split-K {}x{}x{}",
                k.min_workgroups, k.max_splits, k.min_steps
            ),
            _ => String::new(),
        };
        format!(
            "conv {}x{}, pointwise {pw}{latency}{split}, bank {bank}",
            self.conv_tile.px, self.conv_tile.ocb
        )
    }
}

fn parse_gemm(s: &str) -> Option<GemmTile> {
    let v: Vec<u32> = s
        .split('x')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [tm, tn, rm, rn, bk] => Some(GemmTile { tm, tn, rm, rn, bk }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_frames_take_the_latency_tile_only_where_it_fits_the_batch_tile() {
        let limits = wgpu::Limits::default();
        let gpu = KernelConfig::GPU.checked(&limits);
        assert_eq!(gpu.gemm_tile(1), Some(GemmTile::LATENCY));
        assert_eq!(gpu.gemm_tile(2), Some(GemmTile::DEFAULT));
        assert_eq!(KernelConfig::CPU.gemm_tile(1), None);
        // A batch tile of another output width keeps its own tile for single frames too.
        let narrow = GemmTile {
            tm: 16,
            tn: 4,
            rm: 1,
            rn: 3,
            bk: 4,
        };
        let c = KernelConfig {
            pointwise: Pointwise::Gemm(narrow),
            ..KernelConfig::GPU
        }
        .checked(&limits);
        assert_eq!((c.latency_tile, c.gemm_tile(1)), (None, Some(narrow)));
        assert!(
            gpu.describe().contains("(1 frame: 8x8x2x2x8)"),
            "{}",
            gpu.describe()
        );
    }
}
