// Memory bank, part 4 (`Layer::MemoryBank`), one workgroup per image: merges the support lists
// of bank_support's groups into the `neighbors − 1` entries nearest to m*, then PatchCore's
// reweighting: with d_j the distances from the winning feature to the support (d_0 = the raw
// score), the score becomes (1 − softmax(d)_0) · raw score; logits [0, (score − center) / scale],
// so the softmax after this gives P(anomaly) = sigmoid((score − center) / scale).
// Ties go to the lower entry index, as in the reference (reference.rs).
//   feats: [n][h][w][c4] vec4; bank: [entries][c4] vec4; sel: [n] = (raw score, position, m*, 0)
//   cand: [n][groups][15]; calib: [center, scale]; logits: [n][2]
// Rust side: src/ops/bank.rs (prepends bank_common.wgsl: Params, the lists and their merge).

@group(0) @binding(1) var<storage, read> feats: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bank: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> sel: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> cand: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> calib: array<f32>;
@group(0) @binding(6) var<storage, read_write> logits: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wg.x;
    let t = lid.x;
    if n >= p.batch {
        return;   // uniform across the workgroup
    }
    let s = sel[n];
    let best_s = bitcast<f32>(s.x);
    let hw = p.h * p.w;
    let x = (n * hw + min(s.y, hw - 1u)) * p.c4;
    let center = calib[0];
    let scale = calib[1];
    let k = min(max(p.neighbors, 1u) - 1u, K);

    // This invocation's merge of groups t, t + 64, …
    var ld: array<f32, 15>;
    var li: array<u32, 15>;
    empty_list(&ld, &li);
    if k > 0u {
        for (var g = t; g < p.groups; g += WG) {
            let base = (n * p.groups + g) * K;
            for (var q = 0u; q < k; q++) {
                let c = cand[base + q];
                let d = bitcast<f32>(c.x);
                if c.y == 0xffffffffu || !before(d, c.y, ld[k - 1u], li[k - 1u]) {
                    break;   // each group's list is sorted
                }
                insert(&ld, &li, k, d, c.y);
            }
        }
    }
    publish(t, &ld, &li);
    workgroupBarrier();

    if t == 0u {
        var head: array<u32, 64>;
        for (var j = 0u; j < WG; j++) {
            head[j] = 0u;
        }
        var dists: array<f32, 16>;
        var used = 1u;
        dists[0] = best_s;
        for (var r = 0u; r < k; r++) {
            let c = pop_smallest(&head, k);
            if c.y == 0xffffffffu {
                break;
            }
            let bi = c.y;
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
