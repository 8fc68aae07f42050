// Shared by bank_select.wgsl, bank_support.wgsl and bank_finish.wgsl (prepended to each by
// src/ops/bank.rs): their parameters, the tie rule, and the sorted candidate lists that
// bank_support and bank_finish keep per invocation and merge.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
    entries: u32,
    slices: u32,        // slices to scan per position (1 after bank_reduce)
    neighbors: u32,     // support size, 1..=16 (1: no reweighting)
    heat_offset: u32,   // where the heatmaps start in `out` (batch × classes)
    in_w: u32,          // model input width / height in pixels
    in_h: u32,
    stride: u32,        // slices per position in `partial`
    groups: u32,        // workgroups per image of bank_support
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 64u;
const K: u32 = 15u;         // most other support entries
const BIG: f32 = 3.4e38;

var<workgroup> cand_d: array<f32, 960>;   // [64 invocations][K]
var<workgroup> cand_i: array<u32, 960>;

// (d, i) before (d2, i2): the smaller distance, ties to the lower index.
fn before(d: f32, i: u32, d2: f32, i2: u32) -> bool {
    return d < d2 || (d == d2 && i < i2);
}

// An empty sorted list of the K nearest.
fn empty_list(ld: ptr<function, array<f32, 15>>, li: ptr<function, array<u32, 15>>) {
    for (var r = 0u; r < K; r++) {
        (*ld)[r] = BIG;
        (*li)[r] = 0xffffffffu;
    }
}

// Inserts (d, e) into the sorted list of the k nearest if it belongs there.
fn insert(ld: ptr<function, array<f32, 15>>, li: ptr<function, array<u32, 15>>, k: u32,
          d: f32, e: u32) {
    if !before(d, e, (*ld)[k - 1u], (*li)[k - 1u]) {
        return;
    }
    var r = k - 1u;
    loop {
        if r == 0u || !before(d, e, (*ld)[r - 1u], (*li)[r - 1u]) {
            break;
        }
        (*ld)[r] = (*ld)[r - 1u];
        (*li)[r] = (*li)[r - 1u];
        r -= 1u;
    }
    (*ld)[r] = d;
    (*li)[r] = e;
}

// Publishes this invocation's list to cand_d / cand_i (a barrier must follow).
fn publish(t: u32, ld: ptr<function, array<f32, 15>>, li: ptr<function, array<u32, 15>>) {
    for (var r = 0u; r < K; r++) {
        cand_d[t * K + r] = (*ld)[r];
        cand_i[t * K + r] = (*li)[r];
    }
}

// The smallest head among the 64 published lists (each sorted; head[j] of list j used, at
// most k): (bitcast distance, entry), entry 0xffffffff when every list is spent.
fn pop_smallest(head: ptr<function, array<u32, 64>>, k: u32) -> vec2<u32> {
    var bj = WG;
    var bd = BIG;
    var bi = 0xffffffffu;
    for (var j = 0u; j < WG; j++) {
        let h = (*head)[j];
        if h < k {
            let d = cand_d[j * K + h];
            let i = cand_i[j * K + h];
            if i != 0xffffffffu && before(d, i, bd, bi) {
                bd = d;
                bi = i;
                bj = j;
            }
        }
    }
    if bj < WG {
        (*head)[bj] += 1u;
    }
    return vec2<u32>(bitcast<u32>(bd), bi);
}
