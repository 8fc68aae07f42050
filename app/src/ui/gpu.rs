//! [`Gpu`]: the wgpu device the window renders with and the station and the Label tab's
//! predictions inspect on. Its own module, below the app's state and the tabs, so both can
//! name it.

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
