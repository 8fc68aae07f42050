// Memory bank, part 3 (`Layer::MemoryBank`): PatchCore's support, spread over `groups`
// workgroups per image. Workgroup (g, n) scans entries [g·len, (g+1)·len) of the bank for the
// `neighbors − 1` nearest to image n's winning entry m* (from bank_select, m* itself excluded)
// and writes them sorted; bank_finish merges the groups' lists. Distances are summed exactly as
// in the single-workgroup form, so the merged list is the same. Ties go to the lower index.
//   bank: [entries][c4] vec4; sel: [n] = (raw score, position, m*, 0)
//   cand: [n][groups][15] = (bitcast squared distance, entry) (0xffffffff: none)
// Rust side: src/ops/bank.rs (prepends bank_common.wgsl: Params, the lists and their merge).

@group(0) @binding(1) var<storage, read> bank: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> sel: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> cand: array<vec2<u32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.x;
    let n = wg.y;
    let t = lid.x;
    let k = min(max(p.neighbors, 1u) - 1u, K);
    if k == 0u || n >= p.batch {
        return;   // uniform across the workgroup
    }
    let best_i = sel[n].z;
    let m = min(best_i, max(p.entries, 1u) - 1u) * p.c4;
    let len = (p.entries + p.groups - 1u) / p.groups;
    let start = g * len;
    let end = min(start + len, p.entries);
    var ld: array<f32, 15>;
    var li: array<u32, 15>;
    empty_list(&ld, &li);
    for (var e = start + t; e < end; e += WG) {
        if e == best_i {
            continue;
        }
        var d = 0.0;
        for (var c = 0u; c < p.c4; c++) {
            let v = bank[m + c] - bank[e * p.c4 + c];
            d += dot(v, v);
        }
        insert(&ld, &li, k, d, e);
    }
    publish(t, &ld, &li);
    workgroupBarrier();
    if t == 0u {
        var head: array<u32, 64>;
        for (var j = 0u; j < WG; j++) {
            head[j] = 0u;
        }
        let base = (n * p.groups + g) * K;
        for (var r = 0u; r < K; r++) {
            var c = vec2<u32>(bitcast<u32>(BIG), 0xffffffffu);
            if r < k {
                c = pop_smallest(&head, k);
            }
            cand[base + r] = c;
        }
    }
}
