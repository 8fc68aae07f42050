// Standalone ReLU, in place, for a ReLU that does not directly follow a conv (those are fused
// into conv2d). Works on the whole buffer including borders: max(0, 0) keeps them zero.
// Rust side: src/ops/relu.rs.

struct Params {
    len: u32,           // number of vec4s
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if i < p.len {
        data[i] = max(data[i], vec4<f32>(0.0));
    }
}

// Standalone ReLU6, in place (borders stay zero).
@compute @workgroup_size(64, 1, 1)
fn relu6(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if i < p.len {
        data[i] = clamp(data[i], vec4<f32>(0.0), vec4<f32>(6.0));
    }
}
