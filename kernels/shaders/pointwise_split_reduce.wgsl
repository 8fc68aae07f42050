// The second pass of a split-K pointwise convolution (pointwise_gemm.wgsl with p.splits > 1):
//   dst[m][oc4] = act(Σ_s part[s][m][oc4]) (+ res[m][oc4])
// (the bias is in slice 0). One invocation per output vec4 of the batch. `Params` and
// `pixel_base`: pointwise_common.wgsl.
// Rust side: src/ops/pointwise_gemm.rs (`REDUCE_SOURCE`, `reduce_workgroups`).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> res: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let total = p.batch * p.h * p.w;
    if t >= total * p.out_c4 {
        return;
    }
    let oc4 = t % p.out_c4;
    let m = t / p.out_c4;
    var v = vec4<f32>(0.0);
    for (var s = 0u; s < p.splits; s++) {
        v += part[(s * total + m) * p.out_c4 + oc4];
    }
    if p.act == 1u {
        v = max(v, vec4<f32>(0.0));
    } else if p.act == 2u {
        v = clamp(v, vec4<f32>(0.0), vec4<f32>(6.0));
    }
    if p.res == 1u {
        v += res[pixel_base(m, p.res_border, p.out_c4) + oc4];
    }
    dst[pixel_base(m, p.out_border, p.out_c4) + oc4] = v;
}
