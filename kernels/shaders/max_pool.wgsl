// Max pooling (square window, no padding, floor mode) on NHWC4 activations.
//   src: [n][in_h][in_w][c4] (no border: a pool consumes it)
//   dst: [n][out_h + 2*ob][out_w + 2*ob][c4]
// One invocation per output vec4. Rust side: src/ops/max_pool.rs.

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    c4: u32,
    out_h: u32,
    out_w: u32,
    out_border: u32,
    kernel: u32,
    stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.batch * p.out_h * p.out_w * p.c4 {
        return;
    }
    let c = t % p.c4;
    var rest = t / p.c4;
    let ox = rest % p.out_w;
    rest = rest / p.out_w;
    let oy = rest % p.out_h;
    let n = rest / p.out_h;
    var m = vec4<f32>(-3.4e38);
    for (var ky = 0u; ky < p.kernel; ky++) {
        let row = (n * p.in_h + oy * p.stride + ky) * p.in_w + ox * p.stride;
        for (var kx = 0u; kx < p.kernel; kx++) {
            m = max(m, src[(row + kx) * p.c4 + c]);
        }
    }
    let ob = p.out_border;
    dst[((n * (p.out_h + 2u * ob) + oy + ob) * (p.out_w + 2u * ob) + ox + ob) * p.c4 + c] = m;
}
