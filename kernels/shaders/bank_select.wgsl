// Memory bank, part 2 (`Layer::MemoryBank`), one workgroup per image: each position's nearest
// entry over the slices of bank_distance.wgsl (or the one slice bank_reduce.wgsl folded them
// into): its anomaly score is the distance to it; the heatmap is (score − center) / scale; the
// image's raw score is the largest over the positions the image covers (letterbox padding
// excluded; padding cells show the lowest valid value). Writes the winning position and its
// nearest entry m* to `sel` for bank_support / bank_finish (PatchCore's reweighting).
// Ties go to the lower position / entry index, as in the reference (reference.rs).
//   partial: [n·h·w][stride]; calib: [center, scale]; out: heatmaps from heat_offset, [n][h][w]
//   sel: [n] = (bitcast raw score, position, entry, 0)
// Rust side: src/ops/bank.rs (prepends bank_common.wgsl: Params and the tie rule).

@group(0) @binding(1) var<storage, read> partial: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> content: array<u32>;
@group(0) @binding(3) var<storage, read> calib: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> sel: array<vec4<u32>>;

var<workgroup> sh_s: array<f32, 64>;
var<workgroup> sh_p: array<u32, 64>;
var<workgroup> sh_i: array<u32, 64>;
var<workgroup> sh_low: array<f32, 64>;

fn valid_cells(c: u32, cells: u32, side: u32) -> u32 {
    return clamp((c * cells + side - 1u) / side, 1u, cells);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wg.x;
    let t = lid.x;
    let img = min(n, max(p.batch, 1u) - 1u);
    let hw = p.h * p.w;
    let vw = valid_cells(content[2u * img], p.w, p.in_w);
    let vh = valid_cells(content[2u * img + 1u], p.h, p.in_h);
    let center = calib[0];
    let scale = calib[1];
    let heat = p.heat_offset + img * hw;

    var my_s = -1.0;
    var my_p = 0xffffffffu;
    var my_i = 0u;
    var my_low = BIG;
    for (var pos = t; pos < hw; pos += WG) {
        let g = img * hw + pos;
        var d = BIG;
        var idx = 0xffffffffu;
        for (var s = 0u; s < p.slices; s++) {
            let v = partial[g * p.stride + s];
            let dv = bitcast<f32>(v.x);
            if before(dv, v.y, d, idx) {
                d = dv;
                idx = v.y;
            }
        }
        let score = sqrt(max(d, 0.0));
        let z = (score - center) / scale;
        if n < p.batch {
            out[heat + pos] = z;
        }
        if pos / p.w < vh && pos % p.w < vw {
            my_low = min(my_low, z);
            if score > my_s {
                my_s = score;
                my_p = pos;
                my_i = idx;
            }
        }
    }
    sh_s[t] = my_s;
    sh_p[t] = my_p;
    sh_i[t] = my_i;
    sh_low[t] = my_low;
    workgroupBarrier();
    var best_s = -1.0;
    var best_p = 0xffffffffu;
    var best_i = 0u;
    var low = BIG;
    for (var j = 0u; j < WG; j++) {
        let s = sh_s[j];
        if s > best_s || (s == best_s && sh_p[j] < best_p) {
            best_s = s;
            best_p = sh_p[j];
            best_i = sh_i[j];
        }
        low = min(low, sh_low[j]);
    }
    for (var pos = t; pos < hw; pos += WG) {
        if n < p.batch && !(pos / p.w < vh && pos % p.w < vw) {
            out[heat + pos] = low;
        }
    }
    if t == 0u && n < p.batch {
        sel[n] = vec4<u32>(bitcast<u32>(best_s), best_p, best_i, 0u);
    }
}
