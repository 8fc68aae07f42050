// Defect max pool: per image, the margin at each position = largest FAIL-class score minus
// largest PASS-class score; the output is the class scores at the valid position with the
// largest margin, the heatmap is the margin map (cells in the letterbox padding show the
// smallest valid margin), and heat_class is the FAIL class that wins at the chosen position.
//   src:  [n][h][w][c4] (no border), one channel per class
//   content: [n][2] = the input pixels the image fills (width, height), from preprocess
// One invocation per image. Mirrors `Layer::DefectMaxPool` in reference.rs.
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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> is_pass: array<u32>;
@group(0) @binding(3) var<storage, read> content: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> heat_class: array<u32>;

fn valid_cells(c: u32, cells: u32, side: u32) -> u32 {
    return clamp((c * cells + side - 1u) / side, 1u, cells);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.batch {
        return;
    }
    let vw = valid_cells(content[2u * n], p.w, p.in_w);
    let vh = valid_cells(content[2u * n + 1u], p.h, p.in_h);
    let hw = p.h * p.w;
    let stride = p.c4 * 4u;
    let heat = p.heat_offset + n * hw;
    var best = -3.4e38;
    var best_p = 0u;
    var best_k = 0u;
    var lowest = 3.4e38;
    for (var y = 0u; y < vh; y++) {
        for (var x = 0u; x < vw; x++) {
            let pos = y * p.w + x;
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
            if m > best {
                best = m;
                best_p = pos;
                best_k = fail_k;
            }
        }
    }
    for (var y = 0u; y < p.h; y++) {
        for (var x = 0u; x < p.w; x++) {
            if y >= vh || x >= vw {
                out[heat + y * p.w + x] = lowest;
            }
        }
    }
    let at = (n * hw + best_p) * p.c4;
    for (var c = 0u; c < p.c4; c++) {
        dst[n * p.c4 + c] = vec4<f32>(src[(at + c) * 4u], src[(at + c) * 4u + 1u],
                                      src[(at + c) * 4u + 2u], src[(at + c) * 4u + 3u]);
    }
    heat_class[n] = best_k;
}
