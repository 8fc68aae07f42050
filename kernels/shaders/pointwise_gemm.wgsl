// Pointwise (1×1, stride 1, no padding) convolution as a workgroup-tiled matrix product, fused
// with the bias, the activation and (optionally) the inverted-residual skip:
//   dst[m][oc] = act(bias[oc] + Σ_ic src[m][ic] · w[oc][ic]) (+ res[m][oc])
// where m = (n, y, x) runs over every pixel of the batch.
//
// Layouts (all `vec4<f32>` = 4 consecutive channels):
//   src:     [n][h + 2*ib][w + 2*ib][in_c4]     (NHWC4 with zero border ib)
//   weights: [oc4][ic4][4]   -- the 4 vec4s are the columns of a mat4x4 whose column j holds the
//            weights of input channel 4*ic4+j for the 4 output channels of oc4 (as conv2d.wgsl,
//            zero-padded to whole workgroup tiles of output channels)
//   bias:    [oc4]
//   dst:     [n][h + 2*ob][w + 2*ob][out_c4]
//   res:     [n][h + 2*rb][w + 2*rb][out_c4]   (read only when p.res == 1)
//
// A workgroup of TM × TN invocations computes a BM = TM·RM pixels × BN4 = TN·RN output-vec4
// tile; the K dimension (input vec4s) advances BK at a time through workgroup memory, loaded
// cooperatively with consecutive invocations reading consecutive vec4s. Each invocation holds
// RM × RN vec4 accumulators; its pixels are tm + i·TM and its output vec4s tn + j·TN, so the
// stores of neighbouring invocations are neighbouring vec4s. The tile constants are substituted
// by src/ops/pointwise_gemm.rs from the per-adapter table in src/ops/tuning.rs.
//
// Split-K (p.splits > 1, for dispatches too small to fill the GPU): workgroup z takes input
// vec4s [z·k_chunk, (z+1)·k_chunk) and stores its raw sums (bias in slice 0 only, no
// activation, no residual) to part[z][m][oc4]; pointwise_split_reduce.wgsl adds the slices up
// and applies the epilogue.
// `Params` and `pixel_base`: pointwise_common.wgsl. Rust side: src/ops/pointwise_gemm.rs (mirrors
// `Params`).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> res: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> part: array<vec4<f32>>;

const TM: u32 = 8u;     // invocations along pixels
const TN: u32 = 8u;     // invocations along output vec4s
const RM: u32 = 4u;     // pixels per invocation
const RN: u32 = 2u;     // output vec4s per invocation
const BK: u32 = 8u;     // input vec4s per step
const WG: u32 = TM * TN;
const BM: u32 = TM * RM;
const BN4: u32 = TN * RN;
// Row strides in workgroup memory, one vec4 longer than a row: the invocations that read
// different rows in the same step then hit different banks (a power-of-two stride puts them
// all on the same ones).
const XS: u32 = BK + 1u;
const WS: u32 = BK * 4u + 1u;

var<workgroup> xs: array<vec4<f32>, BM * XS>;   // [pixel][k]
var<workgroup> ws: array<vec4<f32>, BN4 * WS>;  // [oc4][k][column]

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tn = li % TN;
    let tm = li / TN;
    let split = p.splits > 1u;
    let slice = select(0u, wg.z, split);
    let m_tile = select(wg.x + wg.z * nwg.x, wg.x, split);
    let k_begin = slice * p.k_chunk;
    let k_end = min(p.in_c4, k_begin + p.k_chunk);
    let m0 = m_tile * BM;
    let n40 = wg.y * BN4;
    let total = p.batch * p.h * p.w;
    if m0 >= total {
        return;   // uniform across the workgroup
    }

    // The pixels this invocation loads into `xs`: rows (li + s·WG) / BK, column li % BK.
    const XL: u32 = BM * BK / WG;
    var x_base: array<u32, XL>;
    var x_ok: array<bool, XL>;
    for (var s = 0u; s < XL; s++) {
        let m = m0 + (li + s * WG) / BK;
        x_ok[s] = m < total;
        x_base[s] = pixel_base(min(m, total - 1u), p.in_border, p.in_c4);
    }
    let xc = li % BK;

    var acc: array<vec4<f32>, RM * RN>;
    for (var j = 0u; j < RN; j++) {
        let b = select(vec4<f32>(0.0), bias[n40 + tn + j * TN], slice == 0u);
        for (var i = 0u; i < RM; i++) {
            acc[j * RM + i] = b;
        }
    }

    const WL: u32 = BN4 * BK * 4u / WG;
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        let kx = k0 + xc;
        for (var s = 0u; s < XL; s++) {
            var v = vec4<f32>(0.0);
            if x_ok[s] && kx < k_end {
                v = src[x_base[s] + kx];
            }
            let idx = li + s * WG;
            xs[(idx / BK) * XS + idx % BK] = v;
        }
        for (var s = 0u; s < WL; s++) {
            let idx = li + s * WG;
            let o = idx / (BK * 4u);
            let rem = idx % (BK * 4u);
            let kk = k0 + rem / 4u;
            var v = vec4<f32>(0.0);
            if kk < k_end {
                v = weights[((n40 + o) * p.in_c4 + kk) * 4u + rem % 4u];
            }
            ws[o * WS + rem] = v;
        }
        workgroupBarrier();
        for (var c = 0u; c < BK; c++) {
            var x: array<vec4<f32>, RM>;
            for (var i = 0u; i < RM; i++) {
                x[i] = xs[(tm + i * TM) * XS + c];
            }
            for (var j = 0u; j < RN; j++) {
                let wb = (tn + j * TN) * WS + c * 4u;
                let w = mat4x4<f32>(ws[wb], ws[wb + 1u], ws[wb + 2u], ws[wb + 3u]);
                for (var i = 0u; i < RM; i++) {
                    acc[j * RM + i] += w * x[i];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RM; i++) {
        let m = m0 + tm + i * TM;
        if m >= total {
            continue;
        }
        if split {
            for (var j = 0u; j < RN; j++) {
                let oc4 = n40 + tn + j * TN;
                if oc4 < p.out_c4 {
                    part[(slice * total + m) * p.out_c4 + oc4] = acc[j * RM + i];
                }
            }
            continue;
        }
        let ob = pixel_base(m, p.out_border, p.out_c4);
        let rb = pixel_base(m, p.res_border, p.out_c4);
        for (var j = 0u; j < RN; j++) {
            let oc4 = n40 + tn + j * TN;
            if oc4 < p.out_c4 {
                var v = acc[j * RM + i];
                if p.act == 1u {
                    v = max(v, vec4<f32>(0.0));
                } else if p.act == 2u {
                    v = clamp(v, vec4<f32>(0.0), vec4<f32>(6.0));
                }
                if p.res == 1u {
                    v += res[rb + oc4];
                }
                dst[ob + oc4] = v;
            }
        }
    }
}
