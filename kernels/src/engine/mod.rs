//! `Engine`: runs one model on a wgpu device, from raw 8-bit frames to probabilities and a
//! class-activation heatmap, in one GPU submission and one readback per call.
//!
//! At creation it compiles the kernels, repacks the weights, and creates every buffer and bind
//! group for `max_batch` images. A call uploads the frames (`queue.write_buffer`), rewrites the
//! small parameter buffers when the batch size changed, records
//! preprocess → conv(+ReLU) / pool … → global pool → linear → softmax → heatmap in one compute
//! pass, copies the outputs into a mapped staging buffer and waits for it. The wait is why a
//! call belongs on a worker thread, never on a UI thread.
//!
//! Activations live in NHWC layout with channels padded to a multiple of 4 (`vec4<f32>`) and a
//! zero border as wide as the consumer convolution's padding, which wgpu's zero-initialised
//! buffers provide once and no kernel ever writes.

use crate::error::EngineError;
use crate::frame::Frame;
use crate::model::Model;
use crate::ops::{self, Kernels};
use crate::spec::{Layer, ModelSpec, Plan, Resize};
use crate::{Heatmap, Inference};

/// The f32 poison written over outputs by [`Engine::poison_outputs`].
const POISON: f32 = f32::NAN;

#[derive(Debug)]
enum Params {
    Preprocess(ops::preprocess::Params),
    Conv(ops::conv2d::Params),
    Pointwise(ops::conv2d::Params),
    Gemm(ops::pointwise_gemm::Params),
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
fn bank_slices(split: ops::bank::BankSplit, entries: u32, positions: u32) -> (u32, u32, u32) {
    let (slices, len) = split.slicing(entries, positions);
    let scan = if split.reduces() { 1 } else { slices };
    (slices, len, scan)
}

impl Params {
    fn set_batch(&mut self, n: u32, classes: u32) {
        match self {
            Self::Preprocess(p) => p.batch = n,
            Self::Conv(p) | Self::Pointwise(p) => p.batch = n,
            Self::Gemm(p) => p.batch = n,
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

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Preprocess(p) => bytemuck::bytes_of(p),
            Self::Conv(p) | Self::Pointwise(p) => bytemuck::bytes_of(p),
            Self::Gemm(p) => bytemuck::bytes_of(p),
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

    fn workgroups(&self, k: &Kernels) -> [u32; 3] {
        match self {
            Self::Preprocess(p) => ops::preprocess::workgroups(p),
            Self::Conv(p) => ops::conv2d::workgroups(p, k.conv_tile),
            Self::Pointwise(p) => ops::conv2d::workgroups(p, k.pointwise_tile),
            Self::Gemm(p) => match k.config.pointwise {
                ops::tuning::Pointwise::Gemm(t) => ops::pointwise_gemm::workgroups(p, t),
                ops::tuning::Pointwise::Direct(_) => unreachable!("a GEMM step needs a GEMM tile"),
            },
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

    fn kernel<'k>(&self, k: &'k Kernels) -> &'k ops::Kernel {
        match self {
            Self::Preprocess(_) => &k.preprocess,
            Self::Conv(_) => &k.conv2d,
            Self::Pointwise(_) => &k.pointwise,
            Self::Gemm(_) => k
                .pointwise_gemm
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
enum Bind {
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
struct Step {
    label: String,
    params: Params,
    uniform: wgpu::Buffer,
    binds: Vec<Bind>,
    bind_group: Option<wgpu::BindGroup>,
}

impl Step {
    /// Records this step's dispatch into `pass`.
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, kernels: &Kernels) {
        let [x, y, z] = self.params.workgroups(kernels);
        pass.set_pipeline(&self.params.kernel(kernels).pipeline);
        pass.set_bind_group(0, self.bind_group.as_ref(), &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Every buffer a [`Bind`] can name.
struct Buffers<'a> {
    acts: &'a [Act],
    weights: &'a [wgpu::Buffer],
    frames: &'a wgpu::Buffer,
    pixels: &'a wgpu::Buffer,
    content: &'a wgpu::Buffer,
    features: &'a wgpu::Buffer,
    logits: &'a wgpu::Buffer,
    is_pass: &'a wgpu::Buffer,
    output: &'a wgpu::Buffer,
    heat_class: &'a wgpu::Buffer,
    scratch: &'a wgpu::Buffer,
    bank_sel: &'a wgpu::Buffer,
    bank_cand: &'a wgpu::Buffer,
}

impl Buffers<'_> {
    fn get(&self, b: Bind) -> &wgpu::Buffer {
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

    fn bind(&self, device: &wgpu::Device, kernels: &Kernels, step: &Step) -> wgpu::BindGroup {
        let mut list = vec![&step.uniform];
        list.extend(step.binds.iter().map(|&b| self.get(b)));
        step.params.kernel(kernels).bind(
            device,
            &format!("kernels::{}::bind_group", step.label),
            &list,
        )
    }
}

/// An NHWC4 activation buffer with a zero border.
#[derive(Debug)]
struct Act {
    c4: u32,
    h: u32,
    w: u32,
    border: u32,
    buffer: wgpu::Buffer,
}

impl Act {
    fn vec4s_per_image(&self) -> u64 {
        (self.h + 2 * self.border) as u64 * (self.w + 2 * self.border) as u64 * self.c4 as u64
    }
}

/// Counts of what one call does, for the benchmark report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchStats {
    /// Compute dispatches per call.
    pub dispatches: usize,
    /// Submissions per call.
    pub submissions: usize,
}

/// One dispatch's time in [`Engine::profile_detail`].
#[derive(Clone, Debug)]
pub struct OpTime {
    /// The step's label (layer kind and index, e.g. `conv2d12`).
    pub label: String,
    /// The op kind, for grouping (`"conv 1×1"`, `"depthwise"`, `"memory bank"`, …).
    pub kind: &'static str,
    /// Seconds: GPU time where `gpu_timestamps`, else host time of its own submission.
    pub seconds: f64,
}

/// What [`Engine::profile_detail`] measured.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Whether the times are the GPU's own (timestamp queries) or the host's.
    pub gpu_timestamps: bool,
    /// Host wall time of the profiled submission(s), readback included.
    pub host_seconds: f64,
    /// One entry per dispatch, in order.
    pub ops: Vec<OpTime>,
}

/// A model loaded onto a GPU device, ready to inspect frames.
#[derive(Debug)]
pub struct Engine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    spec: ModelSpec,
    plan: Plan,
    max_batch: u32,
    /// The most frames one call takes; calls beyond `max_batch` run in sub-batches.
    requested_batch: u32,
    kernels: Kernels,
    steps: Vec<Step>,
    acts: Vec<Act>,
    layer_act: Vec<usize>,
    frames: wgpu::Buffer,
    pixels: wgpu::Buffer,
    content: wgpu::Buffer,
    output: wgpu::Buffer,
    heat_class: wgpu::Buffer,
    readback: wgpu::Buffer,
    current_batch: u32,
    adapter_label: String,
}

/// The cells of a heatmap that cover the region of interest: with `Resize::Fit` the region
/// fills only the top-left of the input, and the heatmap is cut to the cells it touches, so it
/// lies over the region as a whole-input heatmap lies over a stretched one.
pub fn crop_heatmap(input: &crate::InputSpec, roi: (u32, u32), h: Heatmap) -> Heatmap {
    let (cw, ch) = input.content_size(roi.0, roi.1);
    let vw = crate::valid_cells(cw, h.width, input.width);
    let vh = crate::valid_cells(ch, h.height, input.height);
    if (vw, vh) == (h.width, h.height) || h.values.len() != (h.width * h.height) as usize {
        return h;
    }
    let values = (0..vh)
        .flat_map(|y| {
            let row = (y * h.width) as usize;
            h.values[row..row + vw as usize].iter().copied()
        })
        .collect();
    Heatmap {
        width: vw,
        height: vh,
        class_index: h.class_index,
        values,
    }
}

fn storage(
    device: &wgpu::Device,
    label: &str,
    bytes: u64,
    limit: u64,
) -> Result<wgpu::Buffer, EngineError> {
    if bytes > limit {
        return Err(EngineError::TooLargeForDevice {
            what: label.to_owned(),
            bytes,
            limit,
        });
    }
    Ok(device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    }))
}

fn init_storage(device: &wgpu::Device, label: &str, data: &[f32]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt as _;
    let mut padded = data.to_vec();
    if padded.is_empty() {
        padded.push(0.0);
    }
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::cast_slice(&padded),
        usage: wgpu::BufferUsages::STORAGE,
    })
}

impl Engine {
    /// Loads `model` onto `device` with buffers for up to `max_batch` frames per call.
    /// `adapter_label` names the adapter in reports (see [`crate::GpuContext::describe`]).
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        max_batch: u32,
        adapter_label: impl Into<String>,
    ) -> Result<Self, EngineError> {
        Self::with_config(
            device,
            queue,
            model,
            max_batch,
            adapter_label,
            ops::tuning::KernelConfig::for_device(device),
        )
    }

    /// [`Self::new`] with an explicit convolution tile (for tuning and its tests).
    pub fn with_conv_tile(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        max_batch: u32,
        adapter_label: impl Into<String>,
        tile: ops::conv2d::Tile,
    ) -> Result<Self, EngineError> {
        let mut config = ops::tuning::KernelConfig::for_device(device);
        config.conv_tile = tile;
        Self::with_config(device, queue, model, max_batch, adapter_label, config)
    }

    /// [`Self::new`] with explicit kernel choices (the adapter table's other entries, for
    /// tuning and for the tests that check every variant on any adapter).
    pub fn with_config(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        max_batch: u32,
        adapter_label: impl Into<String>,
        config: ops::tuning::KernelConfig,
    ) -> Result<Self, EngineError> {
        let config = config.checked(&device.limits());
        let label = adapter_label.into();
        let requested = max_batch.max(1);
        let mut batch = requested;
        loop {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let built = Self::build(device, queue, model, batch, label.clone(), config);
            let oom_err = pollster::block_on(oom.pop());
            let val_err = pollster::block_on(scope.pop());
            if let Some(e) = oom_err.or(val_err) {
                return Err(EngineError::Gpu(e.to_string()));
            }
            match built {
                // A batch whose activations exceed the device's buffer limit runs as
                // sub-batches that fit: one submission and one readback each.
                Err(EngineError::TooLargeForDevice { bytes, limit, .. }) if batch > 1 => {
                    let fit = (batch as u64 * limit / bytes.max(1)) as u32;
                    batch = fit.clamp(1, batch - 1);
                }
                Ok(mut engine) => {
                    engine.requested_batch = requested;
                    return Ok(engine);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn build(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        max_batch: u32,
        adapter_label: String,
        config: ops::tuning::KernelConfig,
    ) -> Result<Self, EngineError> {
        let plan = model.spec.validate()?;
        let max_batch = max_batch.max(1);
        let limits = device.limits();
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let spec = model.spec.clone();
        let kernels = Kernels::new(device, config);
        let layers = &spec.layers;
        let uniform = |label: &str, params: &Params| {
            use wgpu::util::DeviceExt as _;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: params.bytes(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
        };
        // The border an activation needs: the largest padding of its consumer, if that is a
        // conv (in-place layers in between don't consume).
        let border_before = |from: usize| -> u32 {
            match layers[from..].iter().find(|l| !l.in_place()) {
                Some(l @ Layer::Conv2d { .. }) => l.conv_pads().into_iter().max().unwrap_or(0),
                _ => 0,
            }
        };
        let new_act =
            |label: String, c: u32, h: u32, w: u32, border: u32| -> Result<Act, EngineError> {
                let c4 = c.div_ceil(4);
                let per_image = (h + 2 * border) as u64 * (w + 2 * border) as u64 * c4 as u64 * 16;
                let buffer = storage(device, &label, per_image * max_batch as u64, limit)?;
                Ok(Act {
                    c4,
                    h,
                    w,
                    border,
                    buffer,
                })
            };

        let mut acts = Vec::new();
        let mut steps: Vec<Step> = Vec::new();
        let inp = &spec.input;
        acts.push(new_act(
            "kernels::act::input".into(),
            inp.channels,
            inp.height,
            inp.width,
            border_before(0),
        )?);
        let frames = storage(
            device,
            "kernels::frames",
            (max_batch as u64) * std::mem::size_of::<ops::preprocess::FrameDesc>() as u64,
            limit,
        )?;
        let pixels = storage(device, "kernels::pixels", 1 << 16, limit)?;
        let content = storage(device, "kernels::content", max_batch as u64 * 8, limit)?;
        let mut mean = [0.0; 4];
        let mut inv_std = [0.0; 4];
        for c in 0..inp.channels as usize {
            mean[c] = inp.mean[c];
            inv_std[c] = 1.0 / inp.std[c];
        }
        let pre = Params::Preprocess(ops::preprocess::Params {
            out_w: inp.width,
            out_h: inp.height,
            out_border: acts[0].border,
            channels: inp.channels,
            batch: max_batch,
            fit: (inp.resize == Resize::Fit) as u32,
            _pad: [0; 2],
            mean,
            inv_std,
        });
        steps.push(Step {
            label: "preprocess".into(),
            uniform: uniform("kernels::preprocess::params", &pre),
            params: pre,
            binds: vec![Bind::Frames, Bind::Pixels, Bind::Act(0), Bind::Content],
            bind_group: None,
        });

        let classes = spec.classes.len() as u32;
        let mut weight_buffers: Vec<wgpu::Buffer> = Vec::new();
        let mut add_weights = |device: &wgpu::Device, label: String, data: &[f32]| {
            weight_buffers.push(init_storage(device, &label, data));
            weight_buffers.len() - 1
        };
        // layer_act[i]: the activation holding layer i's output (in-place layers share one).
        let mut layer_act: Vec<usize> = Vec::with_capacity(layers.len());
        let mut features: Option<wgpu::Buffer> = None;
        let mut logits: Option<wgpu::Buffer> = None;
        let mut linear_weights: Option<usize> = None;
        let mut heat_features: Option<usize> = None;
        let mut defect_pool = false;
        let mut scratch: Option<wgpu::Buffer> = None;
        let mut bank_sel: Option<wgpu::Buffer> = None;
        let mut bank_cand: Option<wgpu::Buffer> = None;
        let mut bank_head = false;
        for (i, layer) in layers.iter().enumerate() {
            let cur = layer_act.last().copied().unwrap_or(0);
            let out_shape = plan.shapes[i + 1];
            let label = format!("{}{i}", layer.kind());
            match *layer {
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    groups,
                    ..
                } => {
                    let act = match layers.get(i + 1) {
                        Some(Layer::Relu) => 1,
                        Some(Layer::Relu6) => 2,
                        _ => 0,
                    };
                    // A 1×1, stride-1, unpadded convolution runs as a GEMM where the adapter
                    // table says so; the residual add right after it fuses into its epilogue.
                    let gemm = match kernels.config.pointwise {
                        ops::tuning::Pointwise::Gemm(t)
                            if kernel == 1
                                && stride == 1
                                && groups == 1
                                && layer.conv_pads() == [0; 4] =>
                        {
                            Some(t)
                        }
                        _ => None,
                    };
                    let fuse_add = match (gemm, layers.get(i + 1)) {
                        (Some(_), Some(&Layer::Add { from })) => Some(from),
                        _ => None,
                    };
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_channels,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let [pt, pl, _, _] = layer.conv_pads();
                    let src = &acts[cur];
                    let (off_y, off_x) = (src.border - pt, src.border - pl);
                    let (params, wi, bi) = if groups > 1 {
                        let packed = ops::depthwise::pack_weights(
                            &w.weight,
                            out_channels as usize,
                            kernel as usize,
                        );
                        let mut bias = w.bias.clone();
                        bias.resize(out.c4 as usize * 4, 0.0);
                        let wi = add_weights(device, format!("kernels::{label}::weights"), &packed);
                        let bi = add_weights(device, format!("kernels::{label}::bias"), &bias);
                        let p = Params::Depthwise(ops::depthwise::Params {
                            batch: max_batch,
                            in_h: src.h,
                            in_w: src.w,
                            c4: src.c4,
                            out_h: out.h,
                            out_w: out.w,
                            out_border: out.border,
                            kernel,
                            stride,
                            in_border: src.border,
                            off_y,
                            off_x,
                            act,
                            x_groups: out.w.div_ceil(kernels.depthwise_px),
                            _pad: [0; 2],
                        });
                        (p, wi, bi)
                    } else if let Some(t) = gemm {
                        let padded = t.padded_out_channels(out_channels as usize);
                        let packed = ops::conv2d::pack_weights(
                            &w.weight,
                            out_channels as usize,
                            in_channels as usize,
                            1,
                            padded,
                        );
                        let mut bias = w.bias.clone();
                        bias.resize(padded, 0.0);
                        let wi = add_weights(device, format!("kernels::{label}::weights"), &packed);
                        let bi = add_weights(device, format!("kernels::{label}::bias"), &bias);
                        let res_border = fuse_add.map_or(0, |f| acts[layer_act[f]].border);
                        let p = Params::Gemm(ops::pointwise_gemm::Params {
                            batch: max_batch,
                            h: out.h,
                            w: out.w,
                            in_c4: src.c4,
                            out_c4: out.c4,
                            in_border: src.border,
                            out_border: out.border,
                            act,
                            res: fuse_add.is_some() as u32,
                            res_border,
                            _pad: [0; 2],
                        });
                        (p, wi, bi)
                    } else {
                        let tile = if kernel == 1 {
                            kernels.pointwise_tile
                        } else {
                            kernels.conv_tile
                        };
                        let padded = tile.padded_out_channels(out_channels as usize);
                        let packed = ops::conv2d::pack_weights(
                            &w.weight,
                            out_channels as usize,
                            in_channels as usize,
                            kernel as usize,
                            padded,
                        );
                        let mut bias = w.bias.clone();
                        bias.resize(padded, 0.0);
                        let wi = add_weights(device, format!("kernels::{label}::weights"), &packed);
                        let bi = add_weights(device, format!("kernels::{label}::bias"), &bias);
                        let cp = ops::conv2d::Params {
                            batch: max_batch,
                            in_h: src.h,
                            in_w: src.w,
                            in_c4: src.c4,
                            out_h: out.h,
                            out_w: out.w,
                            out_c4: out.c4,
                            out_border: out.border,
                            kernel,
                            stride,
                            in_border: src.border,
                            act,
                            x_groups: out.w.div_ceil(tile.px),
                            off_y,
                            off_x,
                            _pad: 0,
                        };
                        let p = if kernel == 1 {
                            Params::Pointwise(cp)
                        } else {
                            Params::Conv(cp)
                        };
                        (p, wi, bi)
                    };
                    acts.push(out);
                    let mut binds = vec![
                        Bind::Act(cur),
                        Bind::Weights(wi),
                        Bind::Weights(bi),
                        Bind::Act(acts.len() - 1),
                    ];
                    if matches!(params, Params::Gemm(_)) {
                        // The residual (or, unfused, the input again: never read).
                        binds.push(Bind::Act(fuse_add.map_or(cur, |f| layer_act[f])));
                    }
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds,
                        bind_group: None,
                    });
                    layer_act.push(acts.len() - 1);
                }
                Layer::Relu | Layer::Relu6 => {
                    let fused = i > 0 && matches!(layers[i - 1], Layer::Conv2d { .. });
                    if !fused {
                        let rp = ops::relu::Params {
                            len: 0,
                            _pad: [0; 3],
                        };
                        let per_image = acts[cur].vec4s_per_image() as u32;
                        let params = if matches!(layer, Layer::Relu) {
                            Params::Relu { p: rp, per_image }
                        } else {
                            Params::Relu6 { p: rp, per_image }
                        };
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}::params"), &params),
                            label,
                            params,
                            binds: vec![Bind::Act(cur)],
                            bind_group: None,
                        });
                    }
                    layer_act.push(cur);
                }
                Layer::Add { .. }
                    if steps
                        .last()
                        .is_some_and(|s| matches!(s.params, Params::Gemm(p) if p.res == 1)) =>
                {
                    // Fused into the GEMM epilogue of the 1×1 convolution before it.
                    layer_act.push(cur);
                }
                Layer::Add { from } => {
                    let src = layer_act[from];
                    let (d, s) = (&acts[cur], &acts[src]);
                    let params = Params::Add(ops::add::Params {
                        batch: max_batch,
                        h: d.h,
                        w: d.w,
                        c4: d.c4,
                        dst_border: d.border,
                        src_border: s.border,
                        _pad: [0; 2],
                    });
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds: vec![Bind::Act(src), Bind::Act(cur)],
                        bind_group: None,
                    });
                    layer_act.push(cur);
                }
                Layer::LocalFeatures { ref from, kernel } => {
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_shape.c,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let dst = acts.len();
                    let mut c_offset = 0;
                    for (j, &f) in from.iter().enumerate() {
                        let sa = layer_act[f];
                        let s = &acts[sa];
                        let src_c = plan.shapes[f + 1].c;
                        let params = Params::LocalFeatures(ops::local_features::Params {
                            batch: max_batch,
                            src_h: s.h,
                            src_w: s.w,
                            src_c4: s.c4,
                            src_border: s.border,
                            src_c,
                            stride: crate::spec::local_stride(plan.shapes[f + 1], out_shape),
                            kernel,
                            dst_h: out.h,
                            dst_w: out.w,
                            dst_c4: out.c4,
                            dst_border: out.border,
                            c_offset,
                            _pad: [0; 3],
                        });
                        c_offset += src_c;
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}.{j}::params"), &params),
                            label: format!("{label}.{j}"),
                            params,
                            binds: vec![Bind::Act(sa), Bind::Act(dst)],
                            bind_group: None,
                        });
                    }
                    acts.push(out);
                    layer_act.push(dst);
                }
                Layer::MaxPool2d { kernel, stride } => {
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_shape.c,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let params = Params::MaxPool(ops::max_pool::Params {
                        batch: max_batch,
                        in_h: acts[cur].h,
                        in_w: acts[cur].w,
                        c4: acts[cur].c4,
                        out_h: out.h,
                        out_w: out.w,
                        out_border: out.border,
                        kernel,
                        stride,
                        _pad: [0; 3],
                    });
                    acts.push(out);
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds: vec![Bind::Act(cur), Bind::Act(acts.len() - 1)],
                        bind_group: None,
                    });
                    layer_act.push(acts.len() - 1);
                }
                Layer::GlobalAvgPool | Layer::GlobalMaxPool | Layer::DefectMaxPool => {
                    let a = &acts[cur];
                    features = Some(storage(
                        device,
                        "kernels::features",
                        max_batch as u64 * a.c4 as u64 * 16,
                        limit,
                    )?);
                    heat_features = Some(cur);
                    let gp = ops::global_pool::Params {
                        batch: max_batch,
                        h: a.h,
                        w: a.w,
                        c4: a.c4,
                    };
                    let (params, binds) = match layer {
                        Layer::GlobalMaxPool => (
                            Params::GlobalMaxPool(gp),
                            vec![Bind::Act(cur), Bind::Features],
                        ),
                        Layer::GlobalAvgPool => (
                            Params::GlobalAvgPool(gp),
                            vec![Bind::Act(cur), Bind::Features],
                        ),
                        _ => {
                            defect_pool = true;
                            (
                                Params::DefectPool(ops::defect_pool::Params {
                                    batch: max_batch,
                                    h: a.h,
                                    w: a.w,
                                    c4: a.c4,
                                    classes,
                                    in_w: inp.width,
                                    in_h: inp.height,
                                    heat_offset: max_batch * classes,
                                }),
                                vec![
                                    Bind::Act(cur),
                                    Bind::IsPass,
                                    Bind::Content,
                                    Bind::Features,
                                    Bind::Output,
                                    Bind::HeatClass,
                                ],
                            )
                        }
                    };
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds,
                        bind_group: None,
                    });
                    layer_act.push(cur);
                }
                Layer::MemoryBank {
                    entries,
                    features: nf,
                    neighbors,
                } => {
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let a = &acts[cur];
                    debug_assert_eq!(a.border, 0, "a memory bank's input has no border");
                    let hw = a.h * a.w;
                    let packed = ops::bank::pack_bank(&w.weight, entries as usize, nf as usize);
                    let bank_bytes = packed.len() as u64 * 4;
                    if bank_bytes > limit {
                        return Err(EngineError::TooLargeForDevice {
                            what: format!("the memory bank ({entries} entries × {nf} features)"),
                            bytes: bank_bytes,
                            limit,
                        });
                    }
                    let wi = add_weights(device, format!("kernels::{label}::bank"), &packed);
                    let bi = add_weights(device, format!("kernels::{label}::calibration"), &w.bias);
                    let split = kernels.config.bank;
                    let (slices, slice_len, scan) = bank_slices(split, entries, max_batch * hw);
                    // The partial buffer holds every call size's slices (fewer images: more).
                    let partial_len = (1..=max_batch)
                        .map(|n| {
                            n as u64 * hw as u64 * bank_slices(split, entries, n * hw).0 as u64
                        })
                        .max()
                        .unwrap_or(1);
                    scratch = Some(storage(
                        device,
                        "kernels::bank_partial",
                        partial_len * 8,
                        limit,
                    )?);
                    let groups = split.support_groups(entries);
                    bank_sel = Some(storage(
                        device,
                        "kernels::bank_select",
                        max_batch as u64 * 16,
                        limit,
                    )?);
                    bank_cand = Some(storage(
                        device,
                        "kernels::bank_support",
                        max_batch as u64 * groups as u64 * ops::bank::SUPPORT_K as u64 * 8,
                        limit,
                    )?);
                    features = Some(storage(device, "kernels::features", 16, limit)?);
                    logits = Some(storage(
                        device,
                        "kernels::logits",
                        max_batch as u64 * classes as u64 * 4,
                        limit,
                    )?);
                    heat_features = Some(cur);
                    linear_weights = Some(wi);
                    // No CAM: the heatmap is the score map; softmax picks the anomaly class.
                    defect_pool = true;
                    bank_head = true;
                    let dist = Params::BankDistance {
                        p: ops::bank::DistanceParams {
                            positions: max_batch * hw,
                            c4: a.c4,
                            entries,
                            slice_len,
                            slices,
                            h: a.h,
                            w: a.w,
                            in_w: inp.width,
                            in_h: inp.height,
                            _pad: [0; 3],
                        },
                        per_image: hw,
                        split,
                    };
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}.distance::params"), &dist),
                        label: format!("{label}.distance"),
                        params: dist,
                        binds: vec![
                            Bind::Act(cur),
                            Bind::Weights(wi),
                            Bind::Scratch,
                            Bind::Content,
                        ],
                        bind_group: None,
                    });
                    if split.reduces() {
                        let red = Params::BankReduce {
                            p: ops::bank::ReduceParams {
                                positions: max_batch * hw,
                                slices,
                                stride: slices,
                                _pad: 0,
                            },
                            per_image: hw,
                            split,
                            entries,
                        };
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}.reduce::params"), &red),
                            label: format!("{label}.reduce"),
                            params: red,
                            binds: vec![Bind::Scratch],
                            bind_group: None,
                        });
                    }
                    let sp = ops::bank::ScoreParams {
                        batch: max_batch,
                        h: a.h,
                        w: a.w,
                        c4: a.c4,
                        entries,
                        slices: scan,
                        neighbors,
                        heat_offset: max_batch * classes,
                        in_w: inp.width,
                        in_h: inp.height,
                        stride: slices,
                        groups,
                    };
                    let stages = [
                        (
                            "select",
                            Params::BankSelect(sp, split),
                            vec![
                                Bind::Scratch,
                                Bind::Content,
                                Bind::Weights(bi),
                                Bind::Output,
                                Bind::BankSel,
                            ],
                        ),
                        (
                            "support",
                            Params::BankSupport(sp, split),
                            vec![Bind::Weights(wi), Bind::BankSel, Bind::BankCand],
                        ),
                        (
                            "finish",
                            Params::BankFinish(sp, split),
                            vec![
                                Bind::Act(cur),
                                Bind::Weights(wi),
                                Bind::BankSel,
                                Bind::BankCand,
                                Bind::Weights(bi),
                                Bind::Logits,
                            ],
                        ),
                    ];
                    for (stage, params, binds) in stages {
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}.{stage}::params"), &params),
                            label: format!("{label}.{stage}"),
                            params,
                            binds,
                            bind_group: None,
                        });
                    }
                    layer_act.push(cur);
                }
                Layer::Linear {
                    in_features,
                    out_features,
                } => {
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let packed = ops::linear::pack_weights(
                        &w.weight,
                        out_features as usize,
                        in_features as usize,
                    );
                    let wi = add_weights(device, "kernels::linear::weights".into(), &packed);
                    let bi = add_weights(device, "kernels::linear::bias".into(), &w.bias);
                    linear_weights = Some(wi);
                    logits = Some(storage(
                        device,
                        "kernels::logits",
                        max_batch as u64 * out_features as u64 * 4,
                        limit,
                    )?);
                    let params = Params::Linear(ops::linear::Params {
                        batch: max_batch,
                        in4: in_features.div_ceil(4),
                        out_features,
                        _pad: 0,
                    });
                    steps.push(Step {
                        uniform: uniform("kernels::linear::params", &params),
                        label,
                        params,
                        binds: vec![
                            Bind::Features,
                            Bind::Weights(wi),
                            Bind::Weights(bi),
                            Bind::Logits,
                        ],
                        bind_group: None,
                    });
                    layer_act.push(cur);
                }
            }
        }
        let (Some(features), Some(logits), Some(linear_weights), Some(heat_idx)) =
            (features, logits, linear_weights, heat_features)
        else {
            unreachable!("validated model ends with a global pool + linear")
        };
        let heat = &acts[heat_idx];
        let heat_len = heat.h * heat.w;
        let is_pass: Vec<u32> = plan.is_pass.iter().map(|&p| p as u32).collect();
        let is_pass_buf = {
            use wgpu::util::DeviceExt as _;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("kernels::is_pass"),
                contents: bytemuck::cast_slice(&is_pass),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let out_bytes = max_batch as u64 * (classes + heat_len) as u64 * 4;
        let output = storage(device, "kernels::output", out_bytes, limit)?;
        let scratch = match scratch {
            Some(b) => b,
            None => storage(device, "kernels::scratch", 16, limit)?,
        };
        let bank_sel = match bank_sel {
            Some(b) => b,
            None => storage(device, "kernels::bank_select", 16, limit)?,
        };
        let bank_cand = match bank_cand {
            Some(b) => b,
            None => storage(device, "kernels::bank_support", 16, limit)?,
        };
        let heat_class = storage(device, "kernels::heat_class", max_batch as u64 * 4, limit)?;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernels::readback"),
            size: (out_bytes + max_batch as u64 * 4).next_multiple_of(16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let sm = Params::Softmax(ops::softmax::Params {
            batch: max_batch,
            classes,
            keep_class: (defect_pool && !bank_head) as u32,
            _pad: 0,
        });
        steps.push(Step {
            label: "softmax".into(),
            uniform: uniform("kernels::softmax::params", &sm),
            params: sm,
            binds: vec![Bind::Logits, Bind::IsPass, Bind::Output, Bind::HeatClass],
            bind_group: None,
        });
        if !defect_pool {
            let cam = Params::Cam(ops::cam_heatmap::Params {
                batch: max_batch,
                h: heat.h,
                w: heat.w,
                c4: heat.c4,
                out_offset: 0,
                _pad: [0; 3],
            });
            steps.push(Step {
                label: "cam_heatmap".into(),
                uniform: uniform("kernels::cam_heatmap::params", &cam),
                params: cam,
                binds: vec![
                    Bind::Act(heat_idx),
                    Bind::Weights(linear_weights),
                    Bind::HeatClass,
                    Bind::Output,
                ],
                bind_group: None,
            });
        }

        // Bind groups, now that every buffer exists.
        let buffers = Buffers {
            acts: &acts,
            weights: &weight_buffers,
            frames: &frames,
            pixels: &pixels,
            content: &content,
            features: &features,
            logits: &logits,
            is_pass: &is_pass_buf,
            output: &output,
            heat_class: &heat_class,
            scratch: &scratch,
            bank_sel: &bank_sel,
            bank_cand: &bank_cand,
        };
        for step in &mut steps {
            step.bind_group = Some(buffers.bind(device, &kernels, step));
        }
        queue.submit([]);
        Ok(Self {
            device: device.clone(),
            queue: queue.clone(),
            spec,
            plan,
            max_batch,
            requested_batch: max_batch,
            kernels,
            steps,
            acts,
            layer_act,
            frames,
            pixels,
            content,
            output,
            heat_class,
            readback,
            current_batch: 0, // forces the first call to write every step's parameters
            adapter_label,
        })
    }

    /// The model's spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The most frames one call takes.
    pub fn max_batch(&self) -> u32 {
        self.requested_batch
    }

    /// The most frames one submission holds (less than [`Self::max_batch`] when the
    /// activations of a whole batch exceed the device's buffer size limit).
    pub fn sub_batch(&self) -> u32 {
        self.max_batch
    }

    /// The adapter label given at creation.
    pub fn adapter_label(&self) -> &str {
        &self.adapter_label
    }

    /// Dispatches and submissions per call.
    pub fn dispatch_stats(&self) -> DispatchStats {
        DispatchStats {
            dispatches: self.steps.len(),
            submissions: self.requested_batch.div_ceil(self.max_batch) as usize,
        }
    }

    /// Where the time of one call goes, per dispatch: [`Self::profile_detail`] summed by op
    /// kind, as (op kind, seconds) per dispatch.
    pub fn profile(&mut self, frames: &[Frame<'_>]) -> Result<Vec<(String, f64)>, EngineError> {
        Ok(self
            .profile_detail(frames)?
            .ops
            .into_iter()
            .map(|o| (o.kind.to_owned(), o.seconds))
            .collect())
    }

    /// Runs `frames` once more and times every dispatch. Where the device has timestamp
    /// queries (`Features::TIMESTAMP_QUERY`), each dispatch runs in its own compute pass of one
    /// submission with GPU timestamps at its start and end: the GPU's own time per dispatch,
    /// beside the host's wall time for the whole submission and its readback. Elsewhere
    /// (lavapipe has none) every dispatch is its own submission, waited for: host time, much
    /// slower in total than [`Self::infer`]; compare shares, not sums.
    pub fn profile_detail(&mut self, frames: &[Frame<'_>]) -> Result<Profile, EngineError> {
        let frames = &frames[..frames.len().min(self.max_batch as usize)];
        self.infer(frames)?;
        let kind_of = |p: &Params| match p {
            Params::Preprocess(_) => "preprocess",
            Params::Conv(_) => "conv k×k",
            Params::Pointwise(_) | Params::Gemm(_) => "conv 1×1",
            Params::Depthwise(_) => "depthwise",
            Params::MaxPool(_) => "max_pool",
            Params::Relu { .. } | Params::Relu6 { .. } => "relu",
            Params::Add(_) => "residual add",
            Params::LocalFeatures(_) => "local_features",
            Params::GlobalAvgPool(_)
            | Params::GlobalMaxPool(_)
            | Params::DefectPool(_)
            | Params::Linear(_)
            | Params::Softmax(_)
            | Params::Cam(_) => "pool + classifier",
            Params::BankDistance { .. }
            | Params::BankReduce { .. }
            | Params::BankSelect(..)
            | Params::BankSupport(..)
            | Params::BankFinish(..) => "memory bank",
        };
        let wait = |device: &wgpu::Device, index| {
            device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| EngineError::Gpu(e.to_string()))
        };
        if self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            let count = 2 * self.steps.len() as u32;
            let query_set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernels::profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let bytes = count as u64 * 8;
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernels::profile::resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernels::profile::read"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let t = std::time::Instant::now();
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("kernels::profile"),
                });
            for (i, step) in self.steps.iter().enumerate() {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("kernels::profile"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &query_set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                step.record(&mut pass, &self.kernels);
            }
            encoder.resolve_query_set(&query_set, 0..count, &resolve, 0);
            encoder.copy_buffer_to_buffer(&resolve, 0, &read, 0, Some(bytes));
            let index = self.queue.submit([encoder.finish()]);
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            wait(&self.device, index)?;
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EngineError::Gpu(e.to_string())),
                Err(_) => return Err(EngineError::Gpu("timestamps were never mapped".into())),
            }
            let host = t.elapsed().as_secs_f64();
            let period_ns = self.queue.get_timestamp_period() as f64;
            let ops = {
                let view = read
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| EngineError::Gpu(e.to_string()))?;
                let ticks: &[u64] = bytemuck::cast_slice(&view);
                self.steps
                    .iter()
                    .enumerate()
                    .map(|(i, step)| OpTime {
                        label: step.label.clone(),
                        kind: kind_of(&step.params),
                        seconds: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64
                            * period_ns
                            * 1e-9,
                    })
                    .collect()
            };
            read.unmap();
            return Ok(Profile {
                gpu_timestamps: true,
                host_seconds: host,
                ops,
            });
        }
        let mut ops = Vec::with_capacity(self.steps.len());
        let all = std::time::Instant::now();
        for step in &self.steps {
            let t = std::time::Instant::now();
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("kernels::profile"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("kernels::profile"),
                    timestamp_writes: None,
                });
                step.record(&mut pass, &self.kernels);
            }
            let index = self.queue.submit([encoder.finish()]);
            wait(&self.device, index)?;
            ops.push(OpTime {
                label: step.label.clone(),
                kind: kind_of(&step.params),
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        Ok(Profile {
            gpu_timestamps: false,
            host_seconds: all.elapsed().as_secs_f64(),
            ops,
        })
    }

    /// The kernel variants and tiles this engine runs (see [`ops::tuning`]).
    pub fn kernel_config(&self) -> ops::tuning::KernelConfig {
        self.kernels.config
    }

    /// Runs the model on up to [`Self::max_batch`] frames: one result per frame, in order.
    pub fn infer(&mut self, frames: &[Frame<'_>]) -> Result<Vec<Inference>, EngineError> {
        Ok(self.infer_tapped(frames, None)?.0)
    }

    /// [`Self::infer`], also reading back the output of layer `layer` for every frame as a
    /// `[c, h, w]` tensor (for training heads on a frozen backbone's features, and for tests).
    pub fn infer_with_layer(
        &mut self,
        frames: &[Frame<'_>],
        layer: usize,
    ) -> Result<(Vec<Inference>, Vec<Vec<f32>>), EngineError> {
        if layer >= self.layer_act.len() {
            return Err(EngineError::BadFrame {
                index: 0,
                msg: format!("the model has no layer {layer}"),
            });
        }
        self.infer_tapped(frames, Some(layer))
    }

    fn infer_tapped(
        &mut self,
        frames: &[Frame<'_>],
        tap: Option<usize>,
    ) -> Result<(Vec<Inference>, Vec<Vec<f32>>), EngineError> {
        if frames.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        if frames.len() > self.requested_batch as usize {
            return Err(EngineError::BatchTooLarge {
                got: frames.len(),
                max: self.requested_batch,
            });
        }
        if frames.len() > self.max_batch as usize {
            let (mut all, mut taps) = (Vec::new(), Vec::new());
            for chunk in frames.chunks(self.max_batch as usize) {
                let (r, t) = self.infer_sub_batch(chunk, tap)?;
                all.extend(r);
                taps.extend(t);
            }
            return Ok((all, taps));
        }
        self.infer_sub_batch(frames, tap)
    }

    fn infer_sub_batch(
        &mut self,
        frames: &[Frame<'_>],
        tap: Option<usize>,
    ) -> Result<(Vec<Inference>, Vec<Vec<f32>>), EngineError> {
        let n = frames.len() as u32;
        // Lay the frames out in the pixel buffer, each at a 4-byte aligned offset.
        let mut descs = Vec::with_capacity(frames.len());
        let mut offset = 0u64;
        for (index, f) in frames.iter().enumerate() {
            let roi = f
                .effective_roi()
                .map_err(|msg| EngineError::BadFrame { index, msg })?;
            descs.push(ops::preprocess::FrameDesc {
                offset: offset as u32,
                width: f.width,
                height: f.height,
                bytes_per_pixel: f.format.bytes_per_pixel(),
                roi_x: roi.x,
                roi_y: roi.y,
                roi_w: roi.width,
                roi_h: roi.height,
            });
            offset = (offset + f.data.len() as u64).next_multiple_of(4);
            if offset > u32::MAX as u64 {
                return Err(EngineError::BadFrame {
                    index,
                    msg: "the batch's pixels exceed 4 GiB".into(),
                });
            }
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let result = self.run(frames, &descs, offset, n, tap);
        let oom_err = pollster::block_on(oom.pop());
        let val_err = pollster::block_on(scope.pop());
        if let Some(e) = oom_err.or(val_err) {
            return Err(EngineError::Gpu(e.to_string()));
        }
        result
    }

    fn run(
        &mut self,
        frames: &[Frame<'_>],
        descs: &[ops::preprocess::FrameDesc],
        pixel_bytes: u64,
        n: u32,
        tap: Option<usize>,
    ) -> Result<(Vec<Inference>, Vec<Vec<f32>>), EngineError> {
        if pixel_bytes > self.pixels.size() {
            let limits = self.device.limits();
            let limit = limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size);
            let size = pixel_bytes.next_power_of_two().min(limit).max(pixel_bytes);
            self.pixels = storage(&self.device, "kernels::pixels", size, limit)?;
            let k = &self.kernels.preprocess;
            let step = &mut self.steps[0];
            step.bind_group = Some(k.bind(
                &self.device,
                "kernels::preprocess::bind_group",
                &[
                    &step.uniform,
                    &self.frames,
                    &self.pixels,
                    &self.acts[0].buffer,
                    &self.content,
                ],
            ));
        }
        for (f, d) in frames.iter().zip(descs) {
            let whole = f.data.len() / 4 * 4;
            if whole > 0 {
                self.queue
                    .write_buffer(&self.pixels, d.offset as u64, &f.data[..whole]);
            }
            if whole < f.data.len() {
                let mut tail = [0u8; 4];
                tail[..f.data.len() - whole].copy_from_slice(&f.data[whole..]);
                self.queue
                    .write_buffer(&self.pixels, d.offset as u64 + whole as u64, &tail);
            }
        }
        self.queue
            .write_buffer(&self.frames, 0, bytemuck::cast_slice(descs));
        let classes = self.spec.classes.len() as u32;
        if n != self.current_batch {
            for step in &mut self.steps {
                step.params.set_batch(n, classes);
                self.queue
                    .write_buffer(&step.uniform, 0, step.params.bytes());
            }
            self.current_batch = n;
        }

        let heat = self.plan.heatmap_shape();
        let heat_len = heat.h * heat.w;
        let out_bytes = n as u64 * (classes + heat_len) as u64 * 4;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kernels::infer"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kernels::infer"),
                timestamp_writes: None,
            });
            for step in &self.steps {
                step.record(&mut pass, &self.kernels);
            }
        }
        encoder.copy_buffer_to_buffer(&self.output, 0, &self.readback, 0, Some(out_bytes));
        encoder.copy_buffer_to_buffer(
            &self.heat_class,
            0,
            &self.readback,
            out_bytes,
            Some(n as u64 * 4),
        );
        // The tapped layer's activation, whole (border included), into its own staging buffer.
        let tap_buf = tap.map(|layer| {
            let act = &self.acts[self.layer_act[layer]];
            let bytes = act.vec4s_per_image() * 16 * n as u64;
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernels::tap_readback"),
                size: bytes.next_multiple_of(16),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&act.buffer, 0, &buf, 0, Some(bytes));
            (layer, buf, bytes)
        });
        let index = self.queue.submit([encoder.finish()]);
        let tap_rx = tap_buf.as_ref().map(|(_, buf, bytes)| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            buf.slice(..*bytes)
                .map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                });
            rx
        });

        let read_len = out_bytes + n as u64 * 4;
        let slice = self.readback.slice(..read_len);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| EngineError::Gpu(e.to_string()))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(EngineError::Gpu(e.to_string())),
            Err(_) => return Err(EngineError::Gpu("readback was never mapped".into())),
        }
        let results = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| EngineError::Gpu(e.to_string()))?;
            let floats: &[f32] = bytemuck::cast_slice(&view[..out_bytes as usize]);
            let classes_u: &[u32] =
                bytemuck::cast_slice(&view[out_bytes as usize..read_len as usize]);
            let (k, hl) = (classes as usize, heat_len as usize);
            let heat_base = n as usize * k;
            (0..n as usize)
                .map(|i| Inference {
                    probabilities: floats[i * k..(i + 1) * k].to_vec(),
                    heatmap: crop_heatmap(
                        &self.spec.input,
                        (descs[i].roi_w, descs[i].roi_h),
                        Heatmap {
                            width: heat.w,
                            height: heat.h,
                            class_index: classes_u[i] as usize,
                            values: floats[heat_base + i * hl..heat_base + (i + 1) * hl].to_vec(),
                        },
                    ),
                })
                .collect()
        };
        self.readback.unmap();
        let mut tapped = Vec::new();
        if let (Some((layer, buf, bytes)), Some(rx)) = (tap_buf, tap_rx) {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EngineError::Gpu(e.to_string())),
                Err(_) => return Err(EngineError::Gpu("tap readback was never mapped".into())),
            }
            let shape = self.plan.shapes[layer + 1];
            let act = &self.acts[self.layer_act[layer]];
            {
                let view = buf
                    .slice(..bytes)
                    .get_mapped_range()
                    .map_err(|e| EngineError::Gpu(e.to_string()))?;
                let v: &[f32] = bytemuck::cast_slice(&view);
                let (b, c4) = (act.border as usize, act.c4 as usize);
                let (h, w, c) = (act.h as usize, act.w as usize, shape.c as usize);
                let (ph, pw) = (h + 2 * b, w + 2 * b);
                for i in 0..n as usize {
                    let mut t = vec![0f32; c * h * w];
                    for y in 0..h {
                        for x in 0..w {
                            let base = ((i * ph + y + b) * pw + x + b) * c4 * 4;
                            for ch in 0..c {
                                t[(ch * h + y) * w + x] = v[base + ch];
                            }
                        }
                    }
                    tapped.push(t);
                }
            }
            buf.unmap();
        }
        Ok((results, tapped))
    }

    /// Overwrites the output, heatmap-class and readback buffers with NaN / `u32::MAX`, so a
    /// test can prove that every value it reads back was written by this call's kernels.
    #[doc(hidden)]
    pub fn poison_outputs(&self) {
        let out: Vec<f32> = vec![POISON; (self.output.size() / 4) as usize];
        self.queue
            .write_buffer(&self.output, 0, bytemuck::cast_slice(&out));
        let cls: Vec<u32> = vec![u32::MAX; (self.heat_class.size() / 4) as usize];
        self.queue
            .write_buffer(&self.heat_class, 0, bytemuck::cast_slice(&cls));
        self.queue.submit([]);
    }
}
