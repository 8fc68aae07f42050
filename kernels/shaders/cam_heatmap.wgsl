// Class-activation heatmap at the last feature map: heat[n][y][x] = Σ_c W[cls][c] · A[n][y][x][c]
// for cls = heat_class[n], W the linear classifier's weights.
//   features: [n][h][w][c4] (no border: the global pool consumes it)
//   weights:  [classes][c4] vec4 (the linear layer's buffer)
//   out:      written at out[out_offset + (n * h + y) * w + x]
// Rust side: src/ops/cam_heatmap.rs.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> features: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> heat_class: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let hw = p.h * p.w;
    if t >= p.batch * hw {
        return;
    }
    let n = t / hw;
    let cls = heat_class[n];
    var s = 0.0;
    for (var c = 0u; c < p.c4; c++) {
        s += dot(weights[cls * p.c4 + c], features[t * p.c4 + c]);
    }
    out[p.out_offset + t] = s;
}
