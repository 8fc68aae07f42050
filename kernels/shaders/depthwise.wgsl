// Depthwise conv2d + bias (+ ReLU / ReLU6) on NHWC4 activations: one k×k filter per channel.
//
// Layouts (`vec4<f32>` = 4 consecutive channels):
//   src:     [n][in_h + 2*in_border][in_w + 2*in_border][c4]  (zero border)
//   weights: [c4][ky][kx]  (the 4 channels' taps)
//   bias:    [c4]
//   dst:     [n][out_h + 2*ob][out_w + 2*ob][c4]
// Per-side padding: the top-left padding is `in_border - off_y` / `in_border - off_x`, so the
// window of output (oy, ox) starts at bordered row oy*stride + off_y, column ox*stride + off_x.
// Each invocation computes PX horizontally adjacent pixels of one channel block; neighbouring
// invocations take neighbouring channel blocks of the same pixels, so their loads of inputs
// and weights are contiguous (on CPU rasterisers such as lavapipe every per-invocation load is
// a gather, and contiguous gathers are the cheap ones).
// Rust side: src/ops/depthwise.rs (mirrors `Params`).

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
    in_border: u32,
    off_y: u32,
    off_x: u32,
    act: u32,           // 0 none, 1 relu, 2 relu6
    x_groups: u32,      // ceil(out_w / PX)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

const PX: u32 = 4u;
// Most columns one window row spans: (PX - 1) * stride + kernel, for stride <= 2, kernel <= 7.
const SPAN: u32 = 13u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let u = gid.x + gid.y * nwg.x * 64u;
    if u >= p.batch * p.out_h * p.x_groups * p.c4 {
        return;
    }
    let c4 = u % p.c4;
    let t = u / p.c4;
    let xg = t % p.x_groups;
    let rest = t / p.x_groups;
    let oy = rest % p.out_h;
    let n = rest / p.out_h;
    let in_pw = p.in_w + 2u * p.in_border;
    let in_ph = p.in_h + 2u * p.in_border;
    let ox0 = xg * PX;
    let last = p.out_w - 1u;
    // Each window row is loaded once for all PX pixels: columns x0 .. x0 + SPAN of the bordered
    // input, clamped so that columns only pixels past the right edge would use stay in bounds.
    let x0 = ox0 * p.stride + p.off_x;
    let max_col = last * p.stride + p.off_x + p.kernel - 1u;
    let span = (PX - 1u) * p.stride + p.kernel;
    var acc: array<vec4<f32>, PX>;
    let b = bias[c4];
    for (var i = 0u; i < PX; i++) {
        acc[i] = b;
    }
    let k = p.kernel;
    for (var ky = 0u; ky < k; ky++) {
        let row = (n * in_ph + oy * p.stride + ky + p.off_y) * in_pw;
        var x: array<vec4<f32>, SPAN>;
        for (var j = 0u; j < span; j++) {
            x[j] = src[(row + min(x0 + j, max_col)) * p.c4 + c4];
        }
        for (var kx = 0u; kx < k; kx++) {
            let w = weights[(c4 * k + ky) * k + kx];
            for (var i = 0u; i < PX; i++) {
                acc[i] += w * x[i * p.stride + kx];
            }
        }
    }
    let ob = p.out_border;
    let out_row = (n * (p.out_h + 2u * ob) + oy + ob) * (p.out_w + 2u * ob) + ob;
    for (var i = 0u; i < PX; i++) {
        if ox0 + i < p.out_w {
            var v = acc[i];
            if p.act == 1u {
                v = max(v, vec4<f32>(0.0));
            } else if p.act == 2u {
                v = clamp(v, vec4<f32>(0.0), vec4<f32>(6.0));
            }
            dst[(out_row + ox0 + i) * p.c4 + c4] = v;
        }
    }
}
