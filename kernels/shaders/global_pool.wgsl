// Global pools: [n][h][w][c4] (no border) -> [n][c4]. One invocation per (n, c4).
// `main`: mean over all positions; `max_pool`: maximum over all positions.
// Rust side: src/ops/global_pool.rs.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

// The (n, c4) an invocation pools, or false past the end.
fn slot(gid: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let t = gid.x + gid.y * nwg.x * 64u;
    return vec3<u32>(t, t / p.c4, u32(t < p.batch * p.c4));
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = slot(gid, nwg);
    if s.z == 0u {
        return;
    }
    let hw = p.h * p.w;
    let base = s.y * hw * p.c4 + s.x % p.c4;
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < hw; i++) {
        acc += src[base + i * p.c4];
    }
    dst[s.x] = acc / f32(hw);
}

@compute @workgroup_size(64, 1, 1)
fn max_pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = slot(gid, nwg);
    if s.z == 0u {
        return;
    }
    let hw = p.h * p.w;
    let base = s.y * hw * p.c4 + s.x % p.c4;
    var acc = src[base];
    for (var i = 1u; i < hw; i++) {
        acc = max(acc, src[base + i * p.c4]);
    }
    dst[s.x] = acc;
}
