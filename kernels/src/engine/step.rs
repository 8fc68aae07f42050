//! One dispatch of the engine: its parameters (one variant per kernel, mirrored in the WGSL),
//! how a call's batch size rewrites them, which kernel and how many workgroups it takes, and the
//! buffers it binds.

use super::Act;
use crate::ops::{self, Kernels};

#[derive(Debug)]
pub(super) enum Params {
    Preprocess(ops::preprocess::Params),
    Conv(ops::conv2d::Params),
    Pointwise(ops::conv2d::Params),
    Gemm(ops::pointwise_gemm::Params),
    /// The slices of the GEMM step before it summed (no dispatch when it is unsplit).
    GemmReduce(ops::pointwise_gemm::Params),
    Depthwise(ops::depthwise::Params),
    MaxPool(ops::max_pool::Params),
    Relu {
        p: ops::relu::Params,
        per_image: u32,
    },
    Relu6 {
        p: ops::relu::Params,
        per_image: u32,
    },
    Add(ops::add::Params),
    LocalFeatures(ops::local_features::Params),
    DefectPool(ops::defect_pool::Params),
    GlobalAvgPool(ops::global_pool::Params),
    GlobalMaxPool(ops::global_pool::Params),
    Linear(ops::linear::Params),
    Softmax(ops::softmax::Params),
    Cam(ops::cam_heatmap::Params),
    BankDistance {
        p: ops::bank::DistanceParams,
        per_image: u32,
        split: ops::bank::BankSplit,
    },
    BankReduce {
        p: ops::bank::ReduceParams,
        per_image: u32,
        split: ops::bank::BankSplit,
        entries: u32,
    },
    BankSelect(ops::bank::ScoreParams, ops::bank::BankSplit),
    BankSupport(ops::bank::ScoreParams, ops::bank::BankSplit),
    BankFinish(ops::bank::ScoreParams, ops::bank::BankSplit),
}

/// The slices a memory bank is cut into for `n` images, and what `bank_select` scans.
pub(super) fn bank_slices(
    split: ops::bank::BankSplit,
    entries: u32,
    positions: u32,
) -> (u32, u32, u32) {
    let (slices, len) = split.slicing(entries, positions);
    let scan = if split.reduces() { 1 } else { slices };
    (slices, len, scan)
}

impl Params {
    pub(super) fn set_batch(&mut self, n: u32, classes: u32, config: &ops::tuning::KernelConfig) {
        match self {
            Self::Preprocess(p) => p.batch = n,
            Self::Conv(p) | Self::Pointwise(p) => p.batch = n,
            Self::Gemm(p) | Self::GemmReduce(p) => {
                p.batch = n;
                if let Some(t) = config.gemm_tile(n) {
                    (p.splits, p.k_chunk) = config.split_k.choose(p, t);
                }
            }
            Self::Depthwise(p) => p.batch = n,
            Self::MaxPool(p) => p.batch = n,
            Self::Relu { p, per_image } | Self::Relu6 { p, per_image } => p.len = n * *per_image,
            Self::Add(p) => p.batch = n,
            Self::LocalFeatures(p) => p.batch = n,
            Self::DefectPool(p) => {
                p.batch = n;
                p.heat_offset = n * classes;
            }
            Self::GlobalAvgPool(p) | Self::GlobalMaxPool(p) => p.batch = n,
            Self::Linear(p) => p.batch = n,
            Self::Softmax(p) => p.batch = n,
            Self::Cam(p) => {
                p.batch = n;
                p.out_offset = n * classes;
            }
            Self::BankDistance {
                p,
                per_image,
                split,
            } => {
                p.positions = n * *per_image;
                (p.slices, p.slice_len, _) = bank_slices(*split, p.entries, p.positions);
            }
            Self::BankReduce {
                p,
                per_image,
                split,
                entries,
            } => {
                p.positions = n * *per_image;
                (p.slices, _, _) = bank_slices(*split, *entries, p.positions);
                p.stride = p.slices;
            }
            Self::BankSelect(p, split)
            | Self::BankSupport(p, split)
            | Self::BankFinish(p, split) => {
                p.batch = n;
                p.heat_offset = n * classes;
                let (slices, _, scan) = bank_slices(*split, p.entries, n * p.h * p.w);
                p.stride = slices;
                p.slices = scan;
            }
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Self::Preprocess(p) => bytemuck::bytes_of(p),
            Self::Conv(p) | Self::Pointwise(p) => bytemuck::bytes_of(p),
            Self::Gemm(p) | Self::GemmReduce(p) => bytemuck::bytes_of(p),
            Self::Depthwise(p) => bytemuck::bytes_of(p),
            Self::MaxPool(p) => bytemuck::bytes_of(p),
            Self::Relu { p, .. } | Self::Relu6 { p, .. } => bytemuck::bytes_of(p),
            Self::Add(p) => bytemuck::bytes_of(p),
            Self::LocalFeatures(p) => bytemuck::bytes_of(p),
            Self::DefectPool(p) => bytemuck::bytes_of(p),
            Self::GlobalAvgPool(p) | Self::GlobalMaxPool(p) => bytemuck::bytes_of(p),
            Self::Linear(p) => bytemuck::bytes_of(p),
            Self::Softmax(p) => bytemuck::bytes_of(p),
            Self::Cam(p) => bytemuck::bytes_of(p),
            Self::BankDistance { p, .. } => bytemuck::bytes_of(p),
            Self::BankReduce { p, .. } => bytemuck::bytes_of(p),
            Self::BankSelect(p, _) | Self::BankSupport(p, _) | Self::BankFinish(p, _) => {
                bytemuck::bytes_of(p)
            }
        }
    }

    pub(super) fn workgroups(&self, k: &Kernels) -> [u32; 3] {
        match self {
            Self::Preprocess(p) => ops::preprocess::workgroups(p),
            Self::Conv(p) => ops::conv2d::workgroups(p, k.conv_tile),
            Self::Pointwise(p) => ops::conv2d::workgroups(p, k.pointwise_tile),
            Self::Gemm(p) => match k.config.gemm_tile(p.batch) {
                Some(t) => ops::pointwise_gemm::workgroups(p, t),
                None => unreachable!("a GEMM step needs a GEMM tile"),
            },
            Self::GemmReduce(p) => ops::pointwise_gemm::reduce_workgroups(p),
            Self::Depthwise(p) => ops::depthwise::workgroups(p),
            Self::MaxPool(p) => ops::max_pool::workgroups(p),
            Self::Relu { p, .. } | Self::Relu6 { p, .. } => ops::relu::workgroups(p),
            Self::Add(p) => ops::add::workgroups(p),
            Self::LocalFeatures(p) => ops::local_features::workgroups(p),
            Self::DefectPool(p) => ops::defect_pool::workgroups(p),
            Self::GlobalAvgPool(p) | Self::GlobalMaxPool(p) => ops::global_pool::workgroups(p),
            Self::Linear(p) => ops::linear::workgroups(p),
            Self::Softmax(p) => ops::softmax::workgroups(p),
            Self::Cam(p) => ops::cam_heatmap::workgroups(p),
            Self::BankDistance { p, .. } => ops::bank::distance_workgroups(p),
            Self::BankReduce { p, .. } => ops::bank::reduce_workgroups(p),
            Self::BankSelect(p, _) | Self::BankFinish(p, _) => ops::bank::score_workgroups(p),
            Self::BankSupport(p, _) => ops::bank::support_workgroups(p),
        }
    }

    pub(super) fn kernel<'k>(&self, k: &'k Kernels) -> &'k ops::Kernel {
        match self {
            Self::Preprocess(_) => &k.preprocess,
            Self::Conv(_) => &k.conv2d,
            Self::Pointwise(_) => &k.pointwise,
            Self::Gemm(p) => match (&k.pointwise_gemm_latency, &k.pointwise_gemm) {
                (Some(latency), _) if p.batch <= 1 => latency,
                (_, Some(batch)) => batch,
                _ => unreachable!("a GEMM step needs the GEMM kernel"),
            },
            Self::GemmReduce(_) => k
                .pointwise_split_reduce
                .as_ref()
                .unwrap_or_else(|| unreachable!("a GEMM step needs the GEMM kernel")),
            Self::Depthwise(p) => ops::depthwise::SPECIALISED
                .iter()
                .position(|&f| f == (p.kernel, p.stride))
                .and_then(|i| k.depthwise_fixed.get(i))
                .unwrap_or(&k.depthwise),
            Self::MaxPool(_) => &k.max_pool,
            Self::Relu { .. } => &k.relu,
            Self::Relu6 { .. } => &k.relu6,
            Self::Add(_) => &k.add,
            Self::LocalFeatures(_) => &k.local_features,
            Self::DefectPool(_) => &k.defect_pool,
            Self::GlobalAvgPool(_) => &k.global_avg_pool,
            Self::GlobalMaxPool(_) => &k.global_max_pool,
            Self::Linear(_) => &k.linear,
            Self::Softmax(_) => &k.softmax,
            Self::Cam(_) => &k.cam_heatmap,
            Self::BankDistance { .. } => &k.bank_distance,
            Self::BankReduce { .. } => &k.bank_reduce,
            Self::BankSelect(..) => &k.bank_select,
            Self::BankSupport(..) => &k.bank_support,
            Self::BankFinish(..) => &k.bank_finish,
        }
    }
}

/// A buffer a step binds (after its uniform, at bindings 1, 2, …).
#[derive(Clone, Copy, Debug)]
pub(super) enum Bind {
    Act(usize),
    Weights(usize),
    Frames,
    Pixels,
    Content,
    Features,
    Logits,
    IsPass,
    Output,
    HeatClass,
    Scratch,
    BankSel,
    BankCand,
}

/// One dispatch: its parameters, their uniform buffer, what it binds and its bind group.
#[derive(Debug)]
pub(super) struct Step {
    pub(super) label: String,
    pub(super) params: Params,
    pub(super) uniform: wgpu::Buffer,
    pub(super) binds: Vec<Bind>,
    pub(super) bind_group: Option<wgpu::BindGroup>,
}

impl Step {
    /// Whether this step dispatches at the current batch (a split-K reduce only after a split
    /// GEMM).
    pub(super) fn active(&self, kernels: &Kernels) -> bool {
        !self.params.workgroups(kernels).contains(&0)
    }

    /// Records this step's dispatch into `pass` (nothing when it is not active).
    pub(super) fn record(&self, pass: &mut wgpu::ComputePass<'_>, kernels: &Kernels) {
        let [x, y, z] = self.params.workgroups(kernels);
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        pass.set_pipeline(&self.params.kernel(kernels).pipeline);
        pass.set_bind_group(0, self.bind_group.as_ref(), &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Every buffer a [`Bind`] can name.
pub(super) struct Buffers<'a> {
    pub(super) acts: &'a [Act],
    pub(super) weights: &'a [wgpu::Buffer],
    pub(super) frames: &'a wgpu::Buffer,
    pub(super) pixels: &'a wgpu::Buffer,
    pub(super) content: &'a wgpu::Buffer,
    pub(super) features: &'a wgpu::Buffer,
    pub(super) logits: &'a wgpu::Buffer,
    pub(super) is_pass: &'a wgpu::Buffer,
    pub(super) output: &'a wgpu::Buffer,
    pub(super) heat_class: &'a wgpu::Buffer,
    pub(super) scratch: &'a wgpu::Buffer,
    pub(super) bank_sel: &'a wgpu::Buffer,
    pub(super) bank_cand: &'a wgpu::Buffer,
}

impl Buffers<'_> {
    pub(super) fn get(&self, b: Bind) -> &wgpu::Buffer {
        match b {
            Bind::Act(i) => &self.acts[i].buffer,
            Bind::Weights(i) => &self.weights[i],
            Bind::Frames => self.frames,
            Bind::Pixels => self.pixels,
            Bind::Content => self.content,
            Bind::Features => self.features,
            Bind::Logits => self.logits,
            Bind::IsPass => self.is_pass,
            Bind::Output => self.output,
            Bind::HeatClass => self.heat_class,
            Bind::Scratch => self.scratch,
            Bind::BankSel => self.bank_sel,
            Bind::BankCand => self.bank_cand,
        }
    }

    pub(super) fn bind(
        &self,
        device: &wgpu::Device,
        kernels: &Kernels,
        step: &Step,
    ) -> wgpu::BindGroup {
        let mut list = vec![&step.uniform];
        list.extend(step.binds.iter().map(|&b| self.get(b)));
        step.params.kernel(kernels).bind(
            device,
            &format!("kernels::{}::bind_group", step.label),
            &list,
        )
    }
}
