// Global average pool: [n][h][w][c4] (no border) -> [n][c4]. One invocation per (n, c4).
// Rust side: src/ops/global_avg_pool.rs.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.batch * p.c4 {
        return;
    }
    let c = t % p.c4;
    let n = t / p.c4;
    let hw = p.h * p.w;
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < hw; i++) {
        s += src[(n * hw + i) * p.c4 + c];
    }
    dst[t] = s / f32(hw);
}
