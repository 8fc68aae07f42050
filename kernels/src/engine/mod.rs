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

mod build;
mod profile;
mod step;

use step::Step;

use crate::error::EngineError;
use crate::frame::Frame;
use crate::model::Model;
use crate::ops::{self, Kernels};
use crate::spec::{ModelSpec, Plan};
use crate::{Heatmap, Inference};

/// The f32 poison written over outputs by [`Engine::poison_outputs`].
const POISON: f32 = f32::NAN;

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

    /// Dispatches and submissions per call (dispatches at the last call's batch size: a split-K
    /// reduce pass runs only at the sizes where its product is split).
    pub fn dispatch_stats(&self) -> DispatchStats {
        DispatchStats {
            dispatches: self
                .steps
                .iter()
                .filter(|s| s.active(&self.kernels))
                .count(),
            submissions: self.requested_batch.div_ceil(self.max_batch) as usize,
        }
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
        // One staging buffer for the whole batch, the frames copied straight into it (each at
        // its 4-byte aligned offset; the alignment gaps are never read).
        let mut staged = false;
        if let Some(size) = wgpu::BufferSize::new(pixel_bytes)
            && let Some(mut view) = self.queue.write_buffer_with(&self.pixels, 0, size)
        {
            for (f, d) in frames.iter().zip(descs) {
                let at = d.offset as usize;
                view.slice(at..at + f.data.len()).copy_from_slice(f.data);
            }
            staged = true;
        }
        for (f, d) in frames.iter().zip(descs).filter(|_| !staged) {
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
                step.params.set_batch(n, classes, &self.kernels.config);
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
