// Memory bank, part 1b (`Layer::MemoryBank`): folds the per-slice nearest entries of
// bank_distance.wgsl into slice 0, one workgroup per position (ties to the lower entry index).
// Dispatched where the bank is cut into many slices (real GPUs, src/ops/tuning.rs); bank_select
// then reads one slice instead of all of them.
//   partial: [positions][stride] = (bitcast squared distance, entry index); slices 0..slices
// Rust side: src/ops/bank.rs.

struct Params {
    positions: u32,
    slices: u32,
    stride: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> partial: array<vec2<u32>>;

const WG: u32 = 64u;
const BIG: f32 = 3.4e38;

var<workgroup> sd: array<f32, 64>;
var<workgroup> si: array<u32, 64>;

fn before(d: f32, i: u32, d2: f32, i2: u32) -> bool {
    return d < d2 || (d == d2 && i < i2);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let pos = wg.x + wg.y * nwg.x;
    if pos >= p.positions {
        return;   // uniform across the workgroup
    }
    var d = BIG;
    var idx = 0xffffffffu;
    for (var s = t; s < p.slices; s += WG) {
        let v = partial[pos * p.stride + s];
        let dv = bitcast<f32>(v.x);
        if before(dv, v.y, d, idx) {
            d = dv;
            idx = v.y;
        }
    }
    sd[t] = d;
    si[t] = idx;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if t < half && before(sd[t + half], si[t + half], sd[t], si[t]) {
            sd[t] = sd[t + half];
            si[t] = si[t + half];
        }
        workgroupBarrier();
    }
    if t == 0u {
        partial[pos * p.stride] = vec2<u32>(bitcast<u32>(sd[0]), si[0]);
    }
}
