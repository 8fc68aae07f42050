//! Wrapper of `shaders/global_pool.wgsl`: global average pool (`main`) and global max pool
//! (`max_pool`), one `Params`.

use bytemuck::{Pod, Zeroable};

use super::grid_1d;

/// The shader source.
pub const SOURCE: &str = include_str!("../../shaders/global_pool.wgsl");

/// Mirrors `Params` in global_pool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Params {
    /// Images in this call.
    pub batch: u32,
    /// Feature map height.
    pub h: u32,
    /// Feature map width.
    pub w: u32,
    /// Channels / 4, rounded up.
    pub c4: u32,
}

/// Workgroups for `p`.
pub fn workgroups(p: &Params) -> [u32; 3] {
    let (x, y) = grid_1d(p.batch * p.c4);
    [x, y, 1]
}
