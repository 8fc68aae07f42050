// Fused conv2d + bias (+ ReLU) (+ the inverted-residual add) on NHWC4 activations.
//
// Layouts (all `vec4<f32>` = 4 consecutive channels):
//   src:     [n][in_h + 2*b][in_w + 2*b][in_c4]   (zero border b = in_border >= the padding)
//   weights: [oc4][ky][kx][ic4][4]  -- the 4 vec4s are the columns of a mat4x4 whose column j
//            holds the weights of input channel 4*ic4+j for the 4 output channels of oc4
//   bias:    [oc4]
//   dst:     [n][out_h + 2*ob][out_w + 2*ob][out_c4]  (border `ob` is the consumer's padding)
//   res:     [n][out_h + 2*rb][out_w + 2*rb][out_c4]  (read only when p.res == 1)
//
// Each invocation computes OCB×4 output channels for PX horizontally adjacent output pixels,
// so every weight load is reused PX times and every input load 4·OCB times: on CPU
// rasterisers (lavapipe) every per-invocation load is a gather, so loads per FMA decide speed.
// All invocations of a workgroup share their output channels (the dispatch's y). The zero
// border removes every bounds check from the inner loop. Per-side padding: the window of
// output (oy, ox) starts at bordered row oy*stride + off_y and column ox*stride + off_x.
// Rust side: src/ops/conv2d.rs (mirrors `Params`).

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    in_c4: u32,
    out_h: u32,
    out_w: u32,
    out_c4: u32,
    out_border: u32,
    kernel: u32,
    stride: u32,
    in_border: u32,     // the input's zero border (>= every side's padding)
    act: u32,           // 0 none, 1 relu, 2 relu6
    x_groups: u32,      // ceil(out_w / PX)
    off_y: u32,         // in_border - top padding
    off_x: u32,         // in_border - left padding
    res: u32,           // 1: add `res` after the activation (the residual skip)
    res_border: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> res: array<vec4<f32>>;

// Tile per invocation, substituted by src/ops/conv2d.rs before compilation.
const PX: u32 = 4u;     // output pixels (horizontal)
const OCB: u32 = 1u;    // output channel blocks of 4

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ocg = gid.y;
    let t = gid.x + gid.z * nwg.x * 64u;
    if t >= p.batch * p.out_h * p.x_groups {
        return;
    }
    let xg = t % p.x_groups;
    let rest = t / p.x_groups;
    let oy = rest % p.out_h;
    let n = rest / p.out_h;

    let in_pw = p.in_w + 2u * p.in_border;
    let in_ph = p.in_h + 2u * p.in_border;
    let ox0 = xg * PX;
    // Pixels past the right edge recompute the last column (never stored), so loads stay in bounds.
    let last = p.out_w - 1u;
    var sx: array<u32, PX>;
    for (var i = 0u; i < PX; i++) {
        sx[i] = (min(ox0 + i, last) * p.stride + p.off_x) * p.in_c4;
    }
    var acc: array<vec4<f32>, PX * OCB>;
    for (var j = 0u; j < OCB; j++) {
        let b = bias[ocg * OCB + j];
        for (var i = 0u; i < PX; i++) {
            acc[j * PX + i] = b;
        }
    }
    let kk = p.kernel;  // `1u` in the pointwise (1×1) pipeline: src/ops/conv2d.rs
    // Weights of block j start `wstride` vec4s after those of block j - 1.
    let wstride = kk * kk * p.in_c4 * 4u;
    for (var ky = 0u; ky < kk; ky++) {
        let row = ((n * in_ph + oy * p.stride + ky + p.off_y) * in_pw) * p.in_c4;
        for (var kx = 0u; kx < kk; kx++) {
            var wi = (((ocg * OCB) * kk + ky) * kk + kx) * p.in_c4 * 4u;
            let base = row + kx * p.in_c4;
            for (var ic4 = 0u; ic4 < p.in_c4; ic4++) {
                var x: array<vec4<f32>, PX>;
                for (var i = 0u; i < PX; i++) {
                    x[i] = src[base + sx[i] + ic4];
                }
                for (var j = 0u; j < OCB; j++) {
                    let wj = wi + j * wstride;
                    let w = mat4x4<f32>(weights[wj], weights[wj + 1u], weights[wj + 2u], weights[wj + 3u]);
                    for (var i = 0u; i < PX; i++) {
                        acc[j * PX + i] += w * x[i];
                    }
                }
                wi += 4u;
            }
        }
    }
    let ob = p.out_border;
    let out_row = (n * (p.out_h + 2u * ob) + oy + ob) * (p.out_w + 2u * ob) + ob;
    let rb = p.res_border;
    let res_row = (n * (p.out_h + 2u * rb) + oy + rb) * (p.out_w + 2u * rb) + rb;
    for (var j = 0u; j < OCB; j++) {
        let oc4 = ocg * OCB + j;
        if oc4 >= p.out_c4 {
            break;
        }
        for (var i = 0u; i < PX; i++) {
            if ox0 + i < p.out_w {
                var v = acc[j * PX + i];
                if p.act == 1u {
                    v = max(v, vec4<f32>(0.0));
                } else if p.act == 2u {
                    v = clamp(v, vec4<f32>(0.0), vec4<f32>(6.0));
                }
                if p.res == 1u {
                    v += res[(res_row + ox0 + i) * p.out_c4 + oc4];
                }
                dst[(out_row + ox0 + i) * p.out_c4 + oc4] = v;
            }
        }
    }
}
