//! Creating a headless wgpu device when the caller has none to share.

use crate::error::EngineError;

/// An adapter with its device and queue.
#[derive(Clone, Debug)]
pub struct GpuContext {
    /// The instance the adapter came from.
    pub instance: wgpu::Instance,
    /// The adapter.
    pub adapter: wgpu::Adapter,
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
}

impl GpuContext {
    /// A headless device on the best adapter. `WGPU_BACKEND` (e.g. `vulkan`, `gl`) restricts the
    /// backends; `WGPU_ADAPTER_NAME` picks an adapter by name. The device gets the adapter's own
    /// limits, so large models and batches fit where the hardware allows.
    pub fn headless() -> Result<Self, EngineError> {
        let backend_env = std::env::var("WGPU_BACKEND").ok();
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| EngineError::NoAdapter {
            backend_env,
            detail: e.to_string(),
        })?;
        let info = adapter.get_info();
        // Timestamp queries where the adapter has them: `Engine::profile_detail` then reports
        // the GPU's own time per dispatch.
        let optional = wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kernels::GpuContext"),
            required_features: adapter.features() & optional,
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| EngineError::Device {
            adapter: info.name.clone(),
            detail: e.to_string(),
        })?;
        tracing::info!(adapter = %info.name, backend = ?info.backend, "GPU device ready");
        Ok(Self {
            instance,
            adapter,
            device,
            queue,
        })
    }

    /// A one-line description: `"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"`.
    pub fn describe(&self) -> String {
        let info = self.adapter.get_info();
        format!("{} ({:?})", info.name, info.backend)
    }
}
