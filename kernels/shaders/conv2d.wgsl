// Fused conv2d + bias (+ ReLU) on NHWC4 activations.
//
// Layouts (all `vec4<f32>` = 4 consecutive channels):
//   src:     [n][in_h + 2*pad][in_w + 2*pad][in_c4]   (zero border of `pad` = conv padding)
//   weights: [oc4][ky][kx][ic4][4]  -- the 4 vec4s are the columns of a mat4x4 whose column j
//            holds the weights of input channel 4*ic4+j for the 4 output channels of oc4
//   bias:    [oc4]
//   dst:     [n][out_h + 2*ob][out_w + 2*ob][out_c4]  (border `ob` is the consumer's padding)
//
// Each invocation computes 4 output channels (one oc4) for PX horizontally adjacent output
// pixels, so every weight load is reused PX times and every input load 4 times. All
// invocations of a workgroup share oc4 (it is the dispatch's y), so weight loads are uniform
// across the workgroup. The zero border removes every bounds check from the inner loop.
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
    pad: u32,
    relu: u32,
    x_groups: u32,      // ceil(out_w / PX)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

const PX: u32 = 4u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let oc4 = gid.y;
    let t = gid.x + gid.z * nwg.x * 64u;
    if t >= p.batch * p.out_h * p.x_groups {
        return;
    }
    let xg = t % p.x_groups;
    let rest = t / p.x_groups;
    let oy = rest % p.out_h;
    let n = rest / p.out_h;

    let in_pw = p.in_w + 2u * p.pad;
    let in_ph = p.in_h + 2u * p.pad;
    let ox0 = xg * PX;
    // Pixels past the right edge recompute the last column (never stored), so loads stay in bounds.
    let last = p.out_w - 1u;
    let step = p.stride * p.in_c4;
    let sx0 = min(ox0, last) * step;
    let sx1 = min(ox0 + 1u, last) * step;
    let sx2 = min(ox0 + 2u, last) * step;
    let sx3 = min(ox0 + 3u, last) * step;

    let b = bias[oc4];
    var acc0 = b;
    var acc1 = b;
    var acc2 = b;
    var acc3 = b;
    let kk = p.kernel;
    for (var ky = 0u; ky < kk; ky++) {
        let row = ((n * in_ph + oy * p.stride + ky) * in_pw) * p.in_c4;
        for (var kx = 0u; kx < kk; kx++) {
            var wi = ((oc4 * kk + ky) * kk + kx) * p.in_c4 * 4u;
            let base = row + kx * p.in_c4;
            for (var ic4 = 0u; ic4 < p.in_c4; ic4++) {
                let w = mat4x4<f32>(weights[wi], weights[wi + 1u], weights[wi + 2u], weights[wi + 3u]);
                acc0 += w * src[base + sx0 + ic4];
                acc1 += w * src[base + sx1 + ic4];
                acc2 += w * src[base + sx2 + ic4];
                acc3 += w * src[base + sx3 + ic4];
                wi += 4u;
            }
        }
    }
    if p.relu != 0u {
        acc0 = max(acc0, vec4<f32>(0.0));
        acc1 = max(acc1, vec4<f32>(0.0));
        acc2 = max(acc2, vec4<f32>(0.0));
        acc3 = max(acc3, vec4<f32>(0.0));
    }
    let ob = p.out_border;
    let out_pw = p.out_w + 2u * ob;
    let out_row = (n * (p.out_h + 2u * ob) + oy + ob) * out_pw + ob;
    dst[(out_row + ox0) * p.out_c4 + oc4] = acc0;
    if ox0 + 1u < p.out_w {
        dst[(out_row + ox0 + 1u) * p.out_c4 + oc4] = acc1;
    }
    if ox0 + 2u < p.out_w {
        dst[(out_row + ox0 + 2u) * p.out_c4 + oc4] = acc2;
    }
    if ox0 + 3u < p.out_w {
        dst[(out_row + ox0 + 3u) * p.out_c4 + oc4] = acc3;
    }
}
