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
use crate::spec::{Layer, ModelSpec, Plan};
use crate::{Heatmap, Inference};

/// The f32 poison written over outputs by [`Engine::poison_outputs`].
const POISON: f32 = f32::NAN;

#[derive(Debug)]
enum Params {
    Preprocess(ops::preprocess::Params),
    Conv(ops::conv2d::Params),
    MaxPool(ops::max_pool::Params),
    Relu {
        p: ops::relu::Params,
        per_image: u32,
    },
    GlobalAvgPool(ops::global_pool::Params),
    GlobalMaxPool(ops::global_pool::Params),
    Linear(ops::linear::Params),
    Softmax(ops::softmax::Params),
    Cam(ops::cam_heatmap::Params),
}

impl Params {
    fn set_batch(&mut self, n: u32, classes: u32) {
        match self {
            Self::Preprocess(p) => p.batch = n,
            Self::Conv(p) => p.batch = n,
            Self::MaxPool(p) => p.batch = n,
            Self::Relu { p, per_image } => p.len = n * *per_image,
            Self::GlobalAvgPool(p) | Self::GlobalMaxPool(p) => p.batch = n,
            Self::Linear(p) => p.batch = n,
            Self::Softmax(p) => p.batch = n,
            Self::Cam(p) => {
                p.batch = n;
                p.out_offset = n * classes;
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Preprocess(p) => bytemuck::bytes_of(p),
            Self::Conv(p) => bytemuck::bytes_of(p),
            Self::MaxPool(p) => bytemuck::bytes_of(p),
            Self::Relu { p, .. } => bytemuck::bytes_of(p),
            Self::GlobalAvgPool(p) | Self::GlobalMaxPool(p) => bytemuck::bytes_of(p),
            Self::Linear(p) => bytemuck::bytes_of(p),
            Self::Softmax(p) => bytemuck::bytes_of(p),
            Self::Cam(p) => bytemuck::bytes_of(p),
        }
    }

    fn workgroups(&self, tile: ops::conv2d::Tile) -> [u32; 3] {
        match self {
            Self::Preprocess(p) => ops::preprocess::workgroups(p),
            Self::Conv(p) => ops::conv2d::workgroups(p, tile),
            Self::MaxPool(p) => ops::max_pool::workgroups(p),
            Self::Relu { p, .. } => ops::relu::workgroups(p),
            Self::GlobalAvgPool(p) | Self::GlobalMaxPool(p) => ops::global_pool::workgroups(p),
            Self::Linear(p) => ops::linear::workgroups(p),
            Self::Softmax(p) => ops::softmax::workgroups(p),
            Self::Cam(p) => ops::cam_heatmap::workgroups(p),
        }
    }

    fn kernel<'k>(&self, k: &'k Kernels) -> &'k ops::Kernel {
        match self {
            Self::Preprocess(_) => &k.preprocess,
            Self::Conv(_) => &k.conv2d,
            Self::MaxPool(_) => &k.max_pool,
            Self::Relu { .. } => &k.relu,
            Self::GlobalAvgPool(_) => &k.global_avg_pool,
            Self::GlobalMaxPool(_) => &k.global_max_pool,
            Self::Linear(_) => &k.linear,
            Self::Softmax(_) => &k.softmax,
            Self::Cam(_) => &k.cam_heatmap,
        }
    }
}

/// One dispatch: its parameters, their uniform buffer and its bind group.
#[derive(Debug)]
struct Step {
    label: String,
    params: Params,
    uniform: wgpu::Buffer,
    bind_group: Option<wgpu::BindGroup>,
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

/// A model loaded onto a GPU device, ready to inspect frames.
#[derive(Debug)]
pub struct Engine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    spec: ModelSpec,
    plan: Plan,
    max_batch: u32,
    kernels: Kernels,
    steps: Vec<Step>,
    acts: Vec<Act>,
    frames: wgpu::Buffer,
    pixels: wgpu::Buffer,
    output: wgpu::Buffer,
    heat_class: wgpu::Buffer,
    readback: wgpu::Buffer,
    current_batch: u32,
    adapter_label: String,
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
        Self::with_conv_tile(
            device,
            queue,
            model,
            max_batch,
            adapter_label,
            ops::conv2d::Tile::from_env(),
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
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::build(device, queue, model, max_batch, adapter_label.into(), tile);
        let oom_err = pollster::block_on(oom.pop());
        let val_err = pollster::block_on(scope.pop());
        if let Some(e) = oom_err.or(val_err) {
            return Err(EngineError::Gpu(e.to_string()));
        }
        built
    }

    fn build(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        max_batch: u32,
        adapter_label: String,
        tile: ops::conv2d::Tile,
    ) -> Result<Self, EngineError> {
        let plan = model.spec.validate()?;
        let max_batch = max_batch.max(1);
        let limits = device.limits();
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let spec = model.spec.clone();
        let kernels = Kernels::new(device, tile);
        let layers = &spec.layers;
        let uniform = |label: &str, params: &Params| {
            use wgpu::util::DeviceExt as _;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: params.bytes(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
        };
        // The border an activation needs: the padding of its consumer, if that is a conv
        // (in-place ReLUs in between don't consume).
        let border_before = |from: usize| -> u32 {
            match layers[from..].iter().find(|l| !matches!(l, Layer::Relu)) {
                Some(Layer::Conv2d { padding, .. }) => *padding,
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
            _pad: [0; 3],
            mean,
            inv_std,
        });
        steps.push(Step {
            label: "preprocess".into(),
            uniform: uniform("kernels::preprocess::params", &pre),
            params: pre,
            bind_group: None,
        });

        let classes = spec.classes.len() as u32;
        let mut weight_buffers: Vec<(wgpu::Buffer, wgpu::Buffer)> = Vec::new();
        let mut features: Option<wgpu::Buffer> = None;
        let mut logits: Option<wgpu::Buffer> = None;
        let mut linear_weights: Option<wgpu::Buffer> = None;
        let mut heat_features: Option<usize> = None;
        let mut i = 0;
        while i < layers.len() {
            let cur = acts.len() - 1;
            let out_shape = plan.shapes[i + 1];
            match layers[i] {
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    let fuse_relu = matches!(layers.get(i + 1), Some(Layer::Relu));
                    let next = i + 1 + fuse_relu as usize;
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_channels,
                        out_shape.h,
                        out_shape.w,
                        border_before(next),
                    )?;
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let padded = kernels.conv_tile.padded_out_channels(out_channels as usize);
                    let packed = ops::conv2d::pack_weights(
                        &w.weight,
                        out_channels as usize,
                        in_channels as usize,
                        kernel as usize,
                        padded,
                    );
                    let mut bias = w.bias.clone();
                    bias.resize(padded, 0.0);
                    let wb = init_storage(device, &format!("kernels::conv{i}::weights"), &packed);
                    let bb = init_storage(device, &format!("kernels::conv{i}::bias"), &bias);
                    let p = Params::Conv(ops::conv2d::Params {
                        batch: max_batch,
                        in_h: acts[cur].h,
                        in_w: acts[cur].w,
                        in_c4: acts[cur].c4,
                        out_h: out.h,
                        out_w: out.w,
                        out_c4: out.c4,
                        out_border: out.border,
                        kernel,
                        stride,
                        pad: padding,
                        relu: fuse_relu as u32,
                        x_groups: out.w.div_ceil(kernels.conv_tile.px),
                        _pad: [0; 3],
                    });
                    debug_assert_eq!(acts[cur].border, padding);
                    steps.push(Step {
                        label: format!("conv{i}"),
                        uniform: uniform(&format!("kernels::conv{i}::params"), &p),
                        params: p,
                        bind_group: None,
                    });
                    weight_buffers.push((wb, bb));
                    acts.push(out);
                    i = next;
                    continue;
                }
                Layer::Relu => {
                    let p = Params::Relu {
                        p: ops::relu::Params {
                            len: 0,
                            _pad: [0; 3],
                        },
                        per_image: acts[cur].vec4s_per_image() as u32,
                    };
                    steps.push(Step {
                        label: format!("relu{i}"),
                        uniform: uniform(&format!("kernels::relu{i}::params"), &p),
                        params: p,
                        bind_group: None,
                    });
                }
                Layer::MaxPool2d { kernel, stride } => {
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_shape.c,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let p = Params::MaxPool(ops::max_pool::Params {
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
                    steps.push(Step {
                        label: format!("max_pool{i}"),
                        uniform: uniform(&format!("kernels::max_pool{i}::params"), &p),
                        params: p,
                        bind_group: None,
                    });
                    acts.push(out);
                }
                Layer::GlobalAvgPool | Layer::GlobalMaxPool => {
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
                    let (p, name) = if matches!(model.spec.layers[i], Layer::GlobalMaxPool) {
                        (Params::GlobalMaxPool(gp), "global_max_pool")
                    } else {
                        (Params::GlobalAvgPool(gp), "global_avg_pool")
                    };
                    steps.push(Step {
                        label: name.into(),
                        uniform: uniform(&format!("kernels::{name}::params"), &p),
                        params: p,
                        bind_group: None,
                    });
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
                    linear_weights =
                        Some(init_storage(device, "kernels::linear::weights", &packed));
                    weight_buffers.push((
                        init_storage(device, "kernels::linear::unused", &[0.0]),
                        init_storage(device, "kernels::linear::bias", &w.bias),
                    ));
                    logits = Some(storage(
                        device,
                        "kernels::logits",
                        max_batch as u64 * out_features as u64 * 4,
                        limit,
                    )?);
                    let p = Params::Linear(ops::linear::Params {
                        batch: max_batch,
                        in4: in_features.div_ceil(4),
                        out_features,
                        _pad: 0,
                    });
                    steps.push(Step {
                        label: "linear".into(),
                        uniform: uniform("kernels::linear::params", &p),
                        params: p,
                        bind_group: None,
                    });
                }
            }
            i += 1;
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
            _pad: [0; 2],
        });
        steps.push(Step {
            label: "softmax".into(),
            uniform: uniform("kernels::softmax::params", &sm),
            params: sm,
            bind_group: None,
        });
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
            bind_group: None,
        });

        // Bind groups, now that every buffer exists.
        let mut act_i = 0;
        let mut weights_i = 0;
        for step in &mut steps {
            let k = step.params.kernel(&kernels);
            let label = format!("kernels::{}::bind_group", step.label);
            let bg = match &step.params {
                Params::Preprocess(_) => k.bind(
                    device,
                    &label,
                    &[&step.uniform, &frames, &pixels, &acts[0].buffer],
                ),
                Params::Conv(_) => {
                    let (w, b) = &weight_buffers[weights_i];
                    weights_i += 1;
                    act_i += 1;
                    k.bind(
                        device,
                        &label,
                        &[
                            &step.uniform,
                            &acts[act_i - 1].buffer,
                            w,
                            b,
                            &acts[act_i].buffer,
                        ],
                    )
                }
                Params::MaxPool(_) => {
                    act_i += 1;
                    k.bind(
                        device,
                        &label,
                        &[&step.uniform, &acts[act_i - 1].buffer, &acts[act_i].buffer],
                    )
                }
                Params::Relu { .. } => {
                    k.bind(device, &label, &[&step.uniform, &acts[act_i].buffer])
                }
                Params::GlobalAvgPool(_) | Params::GlobalMaxPool(_) => k.bind(
                    device,
                    &label,
                    &[&step.uniform, &acts[act_i].buffer, &features],
                ),
                Params::Linear(_) => {
                    let (_, b) = &weight_buffers[weights_i];
                    k.bind(
                        device,
                        &label,
                        &[&step.uniform, &features, &linear_weights, b, &logits],
                    )
                }
                Params::Softmax(_) => k.bind(
                    device,
                    &label,
                    &[&step.uniform, &logits, &is_pass_buf, &output, &heat_class],
                ),
                Params::Cam(_) => k.bind(
                    device,
                    &label,
                    &[
                        &step.uniform,
                        &heat.buffer,
                        &linear_weights,
                        &heat_class,
                        &output,
                    ],
                ),
            };
            step.bind_group = Some(bg);
        }
        queue.submit([]);
        Ok(Self {
            device: device.clone(),
            queue: queue.clone(),
            spec,
            plan,
            max_batch,
            kernels,
            steps,
            acts,
            frames,
            pixels,
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
            submissions: 1,
        }
    }

    /// Runs the model on up to [`Self::max_batch`] frames: one result per frame, in order.
    pub fn infer(&mut self, frames: &[Frame<'_>]) -> Result<Vec<Inference>, EngineError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        if frames.len() > self.max_batch as usize {
            return Err(EngineError::BatchTooLarge {
                got: frames.len(),
                max: self.max_batch,
            });
        }
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
        let result = self.run(frames, &descs, offset, n);
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
    ) -> Result<Vec<Inference>, EngineError> {
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
                let [x, y, z] = step.params.workgroups(self.kernels.conv_tile);
                pass.set_pipeline(&step.params.kernel(&self.kernels).pipeline);
                pass.set_bind_group(0, step.bind_group.as_ref(), &[]);
                pass.dispatch_workgroups(x, y, z);
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
        let index = self.queue.submit([encoder.finish()]);

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
                    heatmap: Heatmap {
                        width: heat.w,
                        height: heat.h,
                        class_index: classes_u[i] as usize,
                        values: floats[heat_base + i * hl..heat_base + (i + 1) * hl].to_vec(),
                    },
                })
                .collect()
        };
        self.readback.unmap();
        Ok(results)
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
