//! One Rust wrapper per WGSL kernel: its source, its `Params` mirror and its dispatch size.
//!
//! Pipelines are created once per [`crate::Engine`] (see [`Kernels`]); a call only writes
//! parameters that changed and records dispatches.

pub mod add;
pub mod bank;
pub mod cam_heatmap;
pub mod conv2d;
pub mod defect_pool;
pub mod depthwise;
pub mod global_pool;
pub mod linear;
pub mod local_features;
pub mod max_pool;
pub mod pointwise_gemm;
pub mod preprocess;
pub mod relu;
pub mod softmax;
pub mod tuning;

/// Every shader: `(file name, source)`. The naga validation test walks this list.
pub const SHADERS: &[(&str, &str)] = &[
    ("preprocess.wgsl", preprocess::SOURCE),
    ("conv2d.wgsl", conv2d::SOURCE),
    ("max_pool.wgsl", max_pool::SOURCE),
    ("relu.wgsl", relu::SOURCE),
    ("global_pool.wgsl", global_pool::SOURCE),
    ("linear.wgsl", linear::SOURCE),
    ("softmax.wgsl", softmax::SOURCE),
    ("cam_heatmap.wgsl", cam_heatmap::SOURCE),
    ("depthwise.wgsl", depthwise::SOURCE),
    ("add.wgsl", add::SOURCE),
    ("local_features.wgsl", local_features::SOURCE),
    ("defect_pool.wgsl", defect_pool::SOURCE),
    ("bank_distance.wgsl", bank::DISTANCE_SOURCE),
    ("bank_reduce.wgsl", bank::REDUCE_SOURCE),
    ("bank_select.wgsl", bank::SELECT_SOURCE),
    ("bank_support.wgsl", bank::SUPPORT_SOURCE),
    ("bank_finish.wgsl", bank::FINISH_SOURCE),
    ("pointwise_gemm.wgsl", pointwise_gemm::SOURCE),
    ("pointwise_split_reduce.wgsl", pointwise_gemm::REDUCE_SOURCE),
];

/// Invocations per workgroup of the 1-D kernels (`@workgroup_size(64)` in the shaders).
pub const WORKGROUP: u32 = 64;
/// Most workgroups per dispatch dimension (WebGPU's default limit).
const MAX_GROUPS: u32 = 65_535;

/// Workgroup counts covering `invocations` 1-D invocations, spilling into a second dimension
/// (the shaders rebuild the index as `gid.x + gid.{y|z} · nwg.x · 64`).
pub fn grid_1d(invocations: u32) -> (u32, u32) {
    let groups = invocations.div_ceil(WORKGROUP).max(1);
    if groups <= MAX_GROUPS {
        (groups, 1)
    } else {
        (MAX_GROUPS, groups.div_ceil(MAX_GROUPS))
    }
}

/// A compiled compute pipeline with its bind-group layout.
#[derive(Debug)]
pub struct Kernel {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of bind group 0, for creating bind groups.
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    fn new(device: &wgpu::Device, label: &str, source: &str) -> Self {
        Self::with_entry(device, label, source, "main")
    }

    /// A kernel from the entry point `entry` of `source`.
    fn with_entry(device: &wgpu::Device, label: &str, source: &str, entry: &str) -> Self {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        Self::from_module(device, label, device.create_shader_module(desc), entry)
    }

    /// A kernel compiled without wgpu's runtime bounds checks.
    ///
    /// Only for `conv2d`, the pointwise GEMM and the specialised depthwise pipelines: their checks clamp every index of the per-invocation register arrays,
    /// which keeps LLVM (lavapipe) from holding them in registers and nearly halves its speed
    /// (measured on ref-cnn, batch 32, 2 cores: 316 ms unchecked vs 540–600 ms checked).
    fn new_unchecked(device: &wgpu::Device, label: &str, source: &str) -> Self {
        Self::unchecked_entry(device, label, source, None)
    }

    fn unchecked_entry(
        device: &wgpu::Device,
        label: &str,
        source: &str,
        layout: Option<wgpu::BindGroupLayout>,
    ) -> Self {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        #[allow(unsafe_code)]
        // SAFETY: every index conv2d.wgsl computes is in bounds by construction: the register
        // arrays are indexed by loop counters below their constant sizes; `src` reads stay inside
        // the bordered input because out_h/out_w come from `ModelSpec::validate`'s
        // `(in + top + bottom − k) / stride + 1`, the input border is at least every side's
        // padding and the window starts `border − top` (`border − left`) into it, so the last
        // row read is below `in + border + bottom`; columns past the edge are clamped to the
        // last one; the pointwise variant only fixes the kernel side to 1; its fused residual
        // (`res`, read only when `p.res == 1`, which the engine sets only for a 1×1 convolution
        // followed by an `Add` of the same shape) is read at the stored pixels' own (n, y, x)
        // inside the residual's bordered activation of `out_c4` vec4s. The specialised
        // depthwise.wgsl pipelines (kernel and stride fixed) follow the same border argument:
        // each window row is read at columns clamped to `(out_w − 1)·stride + off_x + k − 1`,
        // inside the bordered row; their register arrays are indexed by loop counters and
        // `i·stride + kx < (PX − 1)·stride + k ≤ SPAN` (SPAN is sized for stride ≤ 2, k ≤ 7, and
        // only k ∈ {3, 5}, stride ∈ {1, 2} are specialised); stores are guarded by `ox < out_w`;
        // `weights`/`bias` are packed for the padded tile (`Tile::padded_out_channels`); `dst`
        // writes are guarded by `ox < out_w` and `oc4 < out_c4`. pointwise_gemm.wgsl: its
        // workgroup arrays are indexed by rows below BM / BN4 (`tm + i·TM`, `tn + j·TN`, loop
        // counters below the constant RM / RN) times their stride plus a column below that
        // stride, and the cooperative loads by `li + s·WG < BM·BK` (`GemmTile::fits` requires
        // whole rounds); its register arrays by loop counters below their constant sizes; `src`
        // is read only for pixels `m < total` (row base from `m`'s own (n, y, x)) and vec4s
        // `k < in_c4`; `weights` / `bias` are padded to whole output tiles
        // (`GemmTile::padded_out_channels`); `dst` / `res` only for `m < total`, `oc4 < out_c4`;
        // split, `part` only at `(slice·total + m)·out_c4 + oc4` with `slice < splits`, and the
        // engine sizes the split buffer for every call size's `SplitK::partial_vec4s`.
        // The engine-vs-reference tests (poisoned outputs, awkward shapes, every tile and
        // every GEMM tile of backbone_ops.rs) check this on every run.
        let module = unsafe {
            device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
        };
        match layout {
            None => Self::from_module(device, label, module, "main"),
            Some(layout) => Self::with_layout(device, label, module, layout),
        }
    }

    /// A pipeline on an explicit bind group layout, so bind groups made for one pipeline of
    /// that layout serve the others (a derived layout belongs to its one pipeline).
    fn with_layout(
        device: &wgpu::Device,
        label: &str,
        module: wgpu::ShaderModule,
        layout: wgpu::BindGroupLayout,
    ) -> Self {
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Self { pipeline, layout }
    }

    fn from_module(
        device: &wgpu::Device,
        label: &str,
        module: wgpu::ShaderModule,
        entry: &str,
    ) -> Self {
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        Self { pipeline, layout }
    }

    /// A bind group binding `buffers` to bindings 0, 1, 2, … in order.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        label: &str,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// All pipelines of the engine, compiled once.
#[derive(Debug)]
pub struct Kernels {
    /// preprocess.wgsl
    pub preprocess: Kernel,
    /// conv2d.wgsl
    pub conv2d: Kernel,
    /// conv2d.wgsl with the kernel side fixed to 1 (1×1 convolutions).
    pub pointwise: Kernel,
    /// depthwise.wgsl
    pub depthwise: Kernel,
    /// Output pixels per depthwise invocation.
    pub depthwise_px: u32,
    /// depthwise.wgsl specialised for each of `depthwise::SPECIALISED`, in that order.
    pub depthwise_fixed: Vec<Kernel>,
    /// relu.wgsl, `relu6`
    pub relu6: Kernel,
    /// add.wgsl
    pub add: Kernel,
    /// local_features.wgsl
    pub local_features: Kernel,
    /// defect_pool.wgsl
    pub defect_pool: Kernel,
    /// `Layer::MemoryBank`, part 1: nearest entry per position and bank slice.
    pub bank_distance: Kernel,
    /// `Layer::MemoryBank`, part 1b: folds many slices into one.
    pub bank_reduce: Kernel,
    /// `Layer::MemoryBank`, part 2: per image score map, heatmap, winning position and entry.
    pub bank_select: Kernel,
    /// `Layer::MemoryBank`, part 3: the winning entry's nearest others, over many workgroups.
    pub bank_support: Kernel,
    /// `Layer::MemoryBank`, part 4: merge, reweighting, logits.
    pub bank_finish: Kernel,
    /// pointwise_gemm.wgsl for the configured tile, where the configuration uses it.
    pub pointwise_gemm: Option<Kernel>,
    /// pointwise_gemm.wgsl for the latency tile (single-frame calls), where configured; same
    /// bind group layout as `pointwise_gemm`.
    pub pointwise_gemm_latency: Option<Kernel>,
    /// pointwise_split_reduce.wgsl (the second pass of a split-K GEMM), with the GEMM.
    pub pointwise_split_reduce: Option<Kernel>,
    /// max_pool.wgsl
    pub max_pool: Kernel,
    /// relu.wgsl
    pub relu: Kernel,
    /// global_pool.wgsl, `main`
    pub global_avg_pool: Kernel,
    /// global_pool.wgsl, `max_pool`
    pub global_max_pool: Kernel,
    /// linear.wgsl
    pub linear: Kernel,
    /// softmax.wgsl
    pub softmax: Kernel,
    /// cam_heatmap.wgsl
    pub cam_heatmap: Kernel,
    /// The tile `conv2d` was compiled for.
    pub conv_tile: conv2d::Tile,
    /// The tile the pointwise (1×1) pipeline was compiled for (`KERNELS_POINTWISE_TILE`).
    pub pointwise_tile: conv2d::Tile,
    /// The configuration these kernels were compiled for.
    pub config: tuning::KernelConfig,
}

impl Kernels {
    /// Compiles every kernel on `device` for `config`.
    pub fn new(device: &wgpu::Device, config: tuning::KernelConfig) -> Self {
        let conv_tile = config.conv_tile;
        let pointwise_tile = config.pointwise_tile;
        let depthwise_px = depthwise::px_from_env();
        let gemm_layout = pointwise_gemm::bind_group_layout(device);
        Self {
            conv_tile,
            pointwise_tile,
            config,
            pointwise_gemm: match config.pointwise {
                tuning::Pointwise::Gemm(t) => Some(Kernel::unchecked_entry(
                    device,
                    "kernels::pointwise_gemm",
                    &t.source(),
                    Some(gemm_layout.clone()),
                )),
                tuning::Pointwise::Direct(_) => None,
            },
            pointwise_gemm_latency: match (config.pointwise, config.latency_tile) {
                (tuning::Pointwise::Gemm(_), Some(t)) => Some(Kernel::unchecked_entry(
                    device,
                    "kernels::pointwise_gemm_latency",
                    &t.source(),
                    Some(gemm_layout),
                )),
                _ => None,
            },
            pointwise_split_reduce: match config.pointwise {
                tuning::Pointwise::Gemm(_) => Some(Kernel::new(
                    device,
                    "kernels::pointwise_split_reduce",
                    pointwise_gemm::REDUCE_SOURCE,
                )),
                tuning::Pointwise::Direct(_) => None,
            },
            preprocess: Kernel::new(device, "kernels::preprocess", preprocess::SOURCE),
            conv2d: Kernel::new_unchecked(device, "kernels::conv2d", &conv_tile.source()),
            pointwise: Kernel::new_unchecked(
                device,
                "kernels::pointwise",
                &pointwise_tile.pointwise_source(),
            ),
            depthwise: Kernel::new(
                device,
                "kernels::depthwise",
                &depthwise::source(depthwise_px, None),
            ),
            depthwise_fixed: depthwise::SPECIALISED
                .iter()
                .map(|&(k, s)| {
                    Kernel::new_unchecked(
                        device,
                        &format!("kernels::depthwise_k{k}_s{s}"),
                        &depthwise::source(depthwise_px, Some((k, s))),
                    )
                })
                .collect(),
            depthwise_px,
            relu6: Kernel::with_entry(device, "kernels::relu6", relu::SOURCE, "relu6"),
            add: Kernel::new(device, "kernels::add", add::SOURCE),
            local_features: Kernel::new(device, "kernels::local_features", local_features::SOURCE),
            defect_pool: Kernel::new(device, "kernels::defect_pool", defect_pool::SOURCE),
            bank_distance: Kernel::new(device, "kernels::bank_distance", bank::DISTANCE_SOURCE),
            bank_reduce: Kernel::new(device, "kernels::bank_reduce", bank::REDUCE_SOURCE),
            bank_select: Kernel::new(device, "kernels::bank_select", bank::SELECT_SOURCE),
            bank_support: Kernel::new(device, "kernels::bank_support", bank::SUPPORT_SOURCE),
            bank_finish: Kernel::new(device, "kernels::bank_finish", bank::FINISH_SOURCE),
            max_pool: Kernel::new(device, "kernels::max_pool", max_pool::SOURCE),
            relu: Kernel::new(device, "kernels::relu", relu::SOURCE),
            global_avg_pool: Kernel::new(device, "kernels::global_avg_pool", global_pool::SOURCE),
            global_max_pool: Kernel::with_entry(
                device,
                "kernels::global_max_pool",
                global_pool::SOURCE,
                "max_pool",
            ),
            linear: Kernel::new(device, "kernels::linear", linear::SOURCE),
            softmax: Kernel::new(device, "kernels::softmax", softmax::SOURCE),
            cam_heatmap: Kernel::new(device, "kernels::cam_heatmap", cam_heatmap::SOURCE),
        }
    }
}
