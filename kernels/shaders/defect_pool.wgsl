// Defect max pool: per image, the margin at each position = largest FAIL-class score minus
// largest PASS-class score; the output is the class scores at the valid position with the
// largest margin, the heatmap is the margin map (cells in the letterbox padding show the
// smallest valid margin), and heat_class is the FAIL class that wins at the chosen position.
//   src:  [n][h][w][c4] (no border), one channel per class
//   content: [n][2] = the input pixels the image fills (width, height), from preprocess
// The linear classifier that follows the pool (always: validated) and the softmax run in the
// epilogue, so the class probabilities come out of this one dispatch:
//   out[n * classes + j] = softmax_j(bias[j] + Σ weights[j] · scores at the chosen position)
// One workgroup per image: each invocation scans every 64th position, then a tree reduction
// (ties to the lower position, as the reference's row-major first maximum). Mirrors
// `Layer::DefectMaxPool` + `Layer::Linear` + the softmax in reference.rs.
// Rust side: src/ops/defect_pool.rs.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
    classes: u32,
    in_w: u32,          // model input width / height in pixels
    in_h: u32,
    heat_offset: u32,   // where the heatmaps start in `out` (batch × classes)
    in4: u32,           // the classifier's input vec4s (= c4)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> is_pass: array<u32>;
@group(0) @binding(3) var<storage, read> content: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> heat_class: array<u32>;
// The classifier: [classes][in4] vec4 (zero-padded past its inputs), [classes] (linear.wgsl's).
@group(0) @binding(6) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;

fn valid_cells(c: u32, cells: u32, side: u32) -> u32 {
    return clamp((c * cells + side - 1u) / side, 1u, cells);
}

const WG: u32 = 64u;

var<workgroup> sh_m: array<f32, 64>;
var<workgroup> sh_p: array<u32, 64>;
var<workgroup> sh_k: array<u32, 64>;
var<workgroup> sh_low: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let n = wg.x;
    if n >= p.batch {
        return;   // uniform across the workgroup
    }
    let vw = valid_cells(content[2u * n], p.w, p.in_w);
    let vh = valid_cells(content[2u * n + 1u], p.h, p.in_h);
    let hw = p.h * p.w;
    let stride = p.c4 * 4u;
    let heat = p.heat_offset + n * hw;
    var best = -3.4e38;
    var best_p = 0xffffffffu;
    var best_k = 0u;
    var lowest = 3.4e38;
    for (var i = t; i < vw * vh; i += WG) {
        let pos = (i / vw) * p.w + i % vw;
        let base = (n * hw + pos) * stride;
        var best_fail = -3.4e38;
        var fail_k = 0u;
        var best_pass = -3.4e38;
        for (var k = 0u; k < p.classes; k++) {
            let v = src[base + k];
            if is_pass[k] != 0u {
                best_pass = max(best_pass, v);
            } else if v > best_fail {
                best_fail = v;
                fail_k = k;
            }
        }
        let m = best_fail - best_pass;
        out[heat + pos] = m;
        lowest = min(lowest, m);
        // Positions ascend within an invocation: strictly greater keeps the first maximum.
        if m > best {
            best = m;
            best_p = pos;
            best_k = fail_k;
        }
    }
    sh_m[t] = best;
    sh_p[t] = best_p;
    sh_k[t] = best_k;
    sh_low[t] = lowest;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if t < half {
            let m2 = sh_m[t + half];
            let p2 = sh_p[t + half];
            if m2 > sh_m[t] || (m2 == sh_m[t] && p2 < sh_p[t]) {
                sh_m[t] = m2;
                sh_p[t] = p2;
                sh_k[t] = sh_k[t + half];
            }
            sh_low[t] = min(sh_low[t], sh_low[t + half]);
        }
        workgroupBarrier();
    }
    let low = sh_low[0];
    for (var pos = t; pos < hw; pos += WG) {
        if pos / p.w >= vh || pos % p.w >= vw {
            out[heat + pos] = low;
        }
    }
    if t == 0u {
        let at = (n * hw + select(sh_p[0], 0u, sh_p[0] >= hw)) * p.c4;
        // Logits (kept in `out` until the softmax overwrites them), their maximum.
        let k = p.classes;
        let base = n * k;
        var m = -3.4e38;
        for (var j = 0u; j < k; j++) {
            var s = 0.0;
            for (var c = 0u; c < p.in4; c++) {
                let f = vec4<f32>(src[(at + c) * 4u], src[(at + c) * 4u + 1u],
                                  src[(at + c) * 4u + 2u], src[(at + c) * 4u + 3u]);
                s += dot(weights[j * p.in4 + c], f);
            }
            let l = s + bias[j];
            out[base + j] = l;
            m = max(m, l);
        }
        var total = 0.0;
        for (var j = 0u; j < k; j++) {
            total += exp(out[base + j] - m);
        }
        for (var j = 0u; j < k; j++) {
            out[base + j] = exp(out[base + j] - m) / total;
        }
        heat_class[n] = sh_k[0];
    }
}
