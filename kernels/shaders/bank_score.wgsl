// Memory bank, part 2 (`Layer::MemoryBank`), one workgroup per image:
// 1. each position's nearest entry over the slices of bank_distance.wgsl: its anomaly score is
//    the distance to it; the heatmap is (score − center) / scale; the image's raw score is the
//    largest over the positions the image covers (letterbox padding excluded; padding cells show
//    the lowest valid value);
// 2. PatchCore's reweighting: the support of the winning position's nearest entry m* is m* and
//    its `neighbors − 1` nearest other entries; with d_j the distances from the winning feature to
//    the support (d_0 = the raw score), the score becomes (1 − softmax(d)_0) · raw score;
// 3. logits [0, (score − center) / scale], so the softmax after this gives P(anomaly) =
//    sigmoid((score − center) / scale).
// Ties go to the lower position / entry index, as in the reference (reference.rs).
//   feats: [n][h][w][c4] vec4; bank: [entries][c4] vec4; partial: [n·h·w][slices]
//   calib: [center, scale]; logits: [n][2]; out: heatmaps from heat_offset, [n][h][w]
// Rust side: src/ops/bank.rs.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
    entries: u32,
    slices: u32,
    neighbors: u32,     // support size, 1..=16 (1: no reweighting)
    heat_offset: u32,   // where the heatmaps start in `out` (batch × classes)
    in_w: u32,          // model input width / height in pixels
    in_h: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> feats: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bank: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> partial: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> content: array<u32>;
@group(0) @binding(5) var<storage, read> calib: array<f32>;
@group(0) @binding(6) var<storage, read_write> logits: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const K: u32 = 15u;         // most other support entries
const BIG: f32 = 3.4e38;

var<workgroup> sh_s: array<f32, 64>;
var<workgroup> sh_p: array<u32, 64>;
var<workgroup> sh_i: array<u32, 64>;
var<workgroup> sh_low: array<f32, 64>;
var<workgroup> cand_d: array<f32, 960>;   // [64 invocations][K]
var<workgroup> cand_i: array<u32, 960>;

fn valid_cells(c: u32, cells: u32, side: u32) -> u32 {
    return clamp((c * cells + side - 1u) / side, 1u, cells);
}

// (d, i) before (d2, i2): the smaller distance, ties to the lower index.
fn before(d: f32, i: u32, d2: f32, i2: u32) -> bool {
    return d < d2 || (d == d2 && i < i2);
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

    // 1. Nearest entry per position; the best valid position of this invocation.
    var my_s = -1.0;
    var my_p = 0xffffffffu;
    var my_i = 0u;
    var my_low = BIG;
    for (var pos = t; pos < hw; pos += WG) {
        let g = img * hw + pos;
        var d = BIG;
        var idx = 0xffffffffu;
        for (var s = 0u; s < p.slices; s++) {
            let v = partial[g * p.slices + s];
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
    let m = min(best_i, max(p.entries, 1u) - 1u) * p.c4;
    let x = (img * hw + min(best_p, hw - 1u)) * p.c4;

    // 2. The support: this invocation's K nearest other entries to m*, sorted.
    let k = min(max(p.neighbors, 1u) - 1u, K);
    var ld: array<f32, 15>;
    var li: array<u32, 15>;
    for (var r = 0u; r < K; r++) {
        ld[r] = BIG;
        li[r] = 0xffffffffu;
    }
    if k > 0u {
        for (var e = t; e < p.entries; e += WG) {
            if e == best_i {
                continue;
            }
            var d = 0.0;
            for (var c = 0u; c < p.c4; c++) {
                let v = bank[m + c] - bank[e * p.c4 + c];
                d += dot(v, v);
            }
            if before(d, e, ld[k - 1u], li[k - 1u]) {
                var r = k - 1u;
                loop {
                    if r == 0u || !before(d, e, ld[r - 1u], li[r - 1u]) {
                        break;
                    }
                    ld[r] = ld[r - 1u];
                    li[r] = li[r - 1u];
                    r -= 1u;
                }
                ld[r] = d;
                li[r] = e;
            }
        }
    }
    for (var r = 0u; r < K; r++) {
        cand_d[t * K + r] = ld[r];
        cand_i[t * K + r] = li[r];
    }
    workgroupBarrier();

    // 3. Invocation 0 merges the lists, weighs the score and writes the logits.
    if t == 0u && n < p.batch {
        var head: array<u32, 64>;
        for (var j = 0u; j < WG; j++) {
            head[j] = 0u;
        }
        var dists: array<f32, 16>;
        var used = 1u;
        dists[0] = best_s;
        for (var r = 0u; r < k; r++) {
            var bj = WG;
            var bd = BIG;
            var bi = 0xffffffffu;
            for (var j = 0u; j < WG; j++) {
                if head[j] < k {
                    let d = cand_d[j * K + head[j]];
                    let i = cand_i[j * K + head[j]];
                    if i != 0xffffffffu && before(d, i, bd, bi) {
                        bd = d;
                        bi = i;
                        bj = j;
                    }
                }
            }
            if bj == WG {
                break;
            }
            head[bj] += 1u;
            var e2 = 0.0;
            for (var c = 0u; c < p.c4; c++) {
                let v = feats[x + c] - bank[bi * p.c4 + c];
                e2 += dot(v, v);
            }
            dists[used] = sqrt(e2);
            used += 1u;
        }
        var score = best_s;
        if used > 1u {
            var mx = dists[0];
            for (var j = 1u; j < used; j++) {
                mx = max(mx, dists[j]);
            }
            var sum = 0.0;
            for (var j = 0u; j < used; j++) {
                sum += exp(dists[j] - mx);
            }
            score = (1.0 - exp(dists[0] - mx) / sum) * best_s;
        }
        logits[2u * n] = 0.0;
        logits[2u * n + 1u] = (score - center) / scale;
    }
}
