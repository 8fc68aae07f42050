//! [`Gpu`]: the wgpu device the window renders with and the station inspects on, and
//! [`Gpu::background`], the one long GPU work (predictions, evaluation) runs on. Its own module,
//! below the app's state and the tabs, so both can name it.

/// The wgpu device the app renders with and inspects on.
#[derive(Clone)]
pub struct Gpu {
    /// Device.
    pub device: wgpu::Device,
    /// Queue.
    pub queue: wgpu::Queue,
    /// "llvmpipe (Vulkan)".
    pub label: String,
}

impl Gpu {
    /// The device for long GPU work (a batch of predictions, an evaluation), apart from the
    /// one the window renders on so that frames never wait behind a batch
    /// ([`crate::training::nn::background_gpu`]); this one when a second cannot be made.
    /// Blocks while the device is first made: call it on a worker thread.
    pub fn background(&self) -> Gpu {
        self.own(crate::training::nn::background_gpu(), "long GPU work")
    }

    /// The device the station inspects on ([`crate::training::nn::station_gpu`]), apart from
    /// the window's; this one when another cannot be made. Call it on a worker thread.
    pub fn station(&self) -> Gpu {
        self.own(crate::training::nn::station_gpu(), "the station")
    }

    fn own(&self, made: anyhow::Result<kernels::GpuContext>, what: &str) -> Gpu {
        match made {
            Ok(g) => Gpu {
                device: g.device.clone(),
                queue: g.queue.clone(),
                label: g.describe(),
            },
            Err(e) => {
                tracing::warn!("no GPU device of its own for {what} ({e}): it shares the window's");
                self.clone()
            }
        }
    }
}
