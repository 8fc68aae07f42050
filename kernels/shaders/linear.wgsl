// Fully connected classifier: features [n][in4] (vec4) -> logits [n][out] (f32).
//   weights: [out][in4] vec4 (zero-padded past in_features); bias: [out].
// One invocation per (n, out). Rust side: src/ops/linear.rs.

struct Params {
    batch: u32,
    in4: u32,
    out_features: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.batch * p.out_features {
        return;
    }
    let o = t % p.out_features;
    let n = t / p.out_features;
    var s = 0.0;
    for (var i = 0u; i < p.in4; i++) {
        s += dot(weights[o * p.in4 + i], src[n * p.in4 + i]);
    }
    dst[t] = s + bias[o];
}
