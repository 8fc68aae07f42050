//! Where an engine call's time goes: every dispatch timed, with GPU timestamp queries where the
//! device has them (for `inspector bench`).

use super::step::Params;
use super::{Engine, OpTime, Profile};
use crate::error::EngineError;
use crate::frame::Frame;

impl Engine {
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
            Params::Pointwise(_) | Params::Gemm(_) | Params::GemmReduce(_) => "conv 1×1",
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
        // The steps that dispatch at this batch (a split-K reduce only after a split GEMM).
        let active: Vec<_> = self
            .steps
            .iter()
            .filter(|s| s.active(&self.kernels))
            .collect();
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
            let count = 2 * active.len() as u32;
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
            for (i, step) in active.iter().enumerate() {
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
                active
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
        let mut ops = Vec::with_capacity(active.len());
        let all = std::time::Instant::now();
        for step in &active {
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
}
