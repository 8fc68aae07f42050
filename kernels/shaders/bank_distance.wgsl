// Memory bank, part 1 (`Layer::MemoryBank`): every feature position's nearest entry in one slice
// of the bank, as a tiled distance product with a min-reduction.
//   feats:   [positions][c4] vec4 (NHWC4, no border; padded channels are 0)
//   bank:    [entries][c4] vec4 (padded channels are 0)
//   partial: [positions][slices] = (bitcast squared distance, entry index) of the nearest entry
//            of that slice (ties go to the lower index); left unwritten for a tile of positions
//            that all lie in the letterbox padding (bank_score.wgsl never uses those)
//   content: [n][2] = the input pixels each image fills (width, height), from preprocess
// A workgroup of 8×8 invocations scores 32 positions against one slice of the bank, 32 entries
// at a time; each invocation holds a 4 positions × 4 entries block of squared distances, summed
// over (f − b)² directly (no ‖f‖² + ‖b‖² − 2 f·b cancellation). Grid: x + 65535·z = position
// tile, y = slice: tiles vary fastest, so the letterbox tiles a wide image skips spread over a
// rasteriser's threads (lavapipe hands each thread a contiguous run of workgroups).
// Rust side: src/ops/bank.rs; reference: reference.rs.

struct Params {
    positions: u32,     // images × h × w in this call
    c4: u32,            // feature vec4s per position / entry
    entries: u32,       // bank entries
    slice_len: u32,     // entries per slice, a multiple of 32
    slices: u32,
    h: u32,             // feature map height / width
    w: u32,
    in_w: u32,          // model input width / height in pixels
    in_h: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> feats: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bank: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partial: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> content: array<u32>;

const BIG: f32 = 3.4e38;

var<workgroup> red_d: array<f32, 256>;   // [32 positions][8 column invocations]
var<workgroup> red_i: array<u32, 256>;
var<workgroup> tile_valid: u32;

fn valid_cells(c: u32, cells: u32, side: u32) -> u32 {
    return clamp((c * cells + side - 1u) / side, 1u, cells);
}

// Whether global position `g` lies on the image (not in its letterbox padding).
fn is_valid(g: u32) -> bool {
    let hw = p.h * p.w;
    let n = g / hw;
    let local = g % hw;
    let vw = valid_cells(content[2u * n], p.w, p.in_w);
    let vh = valid_cells(content[2u * n + 1u], p.h, p.in_h);
    return g < p.positions && local / p.w < vh && local % p.w < vw;
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let slice = wg.y;
    let tile = wg.x + wg.z * 65535u;
    let p0 = tile * 32u + ty * 4u;
    let last = max(p.positions, 1u) - 1u;
    let r0 = min(p0, last) * p.c4;
    let r1 = min(p0 + 1u, last) * p.c4;
    let r2 = min(p0 + 2u, last) * p.c4;
    let r3 = min(p0 + 3u, last) * p.c4;
    var best_d = vec4<f32>(BIG);
    var best_i = vec4<u32>(0u);
    let start = slice * p.slice_len;
    // A tile whose 32 positions all lie in the padding skips the bank. Invocation 0 decides
    // and the workgroup reads the answer as a uniform value, so the loop bound stays uniform
    // (a per-invocation bound costs lavapipe per-lane masking in the inner loop).
    if tx == 0u && ty == 0u {
        var any = 0u;
        for (var r = 0u; r < 32u; r++) {
            any = any | u32(is_valid(tile * 32u + r));
        }
        tile_valid = any;
    }
    let any_valid = workgroupUniformLoad(&tile_valid) != 0u;
    let end = select(start, min(start + p.slice_len, p.entries), any_valid);
    let top = max(p.entries, 1u) - 1u;
    for (var e0 = start; e0 < end; e0 += 32u) {
        let eb = e0 + tx * 4u;
        let b0 = min(eb, top) * p.c4;
        let b1 = min(eb + 1u, top) * p.c4;
        let b2 = min(eb + 2u, top) * p.c4;
        let b3 = min(eb + 3u, top) * p.c4;
        var a0 = vec4<f32>(0.0);   // position r0 against entries eb..eb+3
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var k = 0u; k < p.c4; k++) {
            let e_0 = bank[b0 + k];
            let e_1 = bank[b1 + k];
            let e_2 = bank[b2 + k];
            let e_3 = bank[b3 + k];
            let f0 = feats[r0 + k];
            let f1 = feats[r1 + k];
            let f2 = feats[r2 + k];
            let f3 = feats[r3 + k];
            var d: vec4<f32>;
            d = f0 - e_0; a0.x += dot(d, d);
            d = f0 - e_1; a0.y += dot(d, d);
            d = f0 - e_2; a0.z += dot(d, d);
            d = f0 - e_3; a0.w += dot(d, d);
            d = f1 - e_0; a1.x += dot(d, d);
            d = f1 - e_1; a1.y += dot(d, d);
            d = f1 - e_2; a1.z += dot(d, d);
            d = f1 - e_3; a1.w += dot(d, d);
            d = f2 - e_0; a2.x += dot(d, d);
            d = f2 - e_1; a2.y += dot(d, d);
            d = f2 - e_2; a2.z += dot(d, d);
            d = f2 - e_3; a2.w += dot(d, d);
            d = f3 - e_0; a3.x += dot(d, d);
            d = f3 - e_1; a3.y += dot(d, d);
            d = f3 - e_2; a3.z += dot(d, d);
            d = f3 - e_3; a3.w += dot(d, d);
        }
        for (var j = 0u; j < 4u; j++) {
            if eb + j < end {
                let e = eb + j;
                if a0[j] < best_d.x { best_d.x = a0[j]; best_i.x = e; }
                if a1[j] < best_d.y { best_d.y = a1[j]; best_i.y = e; }
                if a2[j] < best_d.z { best_d.z = a2[j]; best_i.z = e; }
                if a3[j] < best_d.w { best_d.w = a3[j]; best_i.w = e; }
            }
        }
    }
    for (var r = 0u; r < 4u; r++) {
        red_d[(ty * 4u + r) * 8u + tx] = best_d[r];
        red_i[(ty * 4u + r) * 8u + tx] = best_i[r];
    }
    workgroupBarrier();
    // Invocation (tx, ty) with tx < 4 finishes position ty·4 + tx of the tile.
    if tx < 4u {
        let row = ty * 4u + tx;
        var d = BIG;
        var i = 0xffffffffu;
        for (var c = 0u; c < 8u; c++) {
            let dv = red_d[row * 8u + c];
            let iv = red_i[row * 8u + c];
            if dv < d || (dv == d && iv < i) {
                d = dv;
                i = iv;
            }
        }
        let pos = tile * 32u + row;
        if pos < p.positions && any_valid {
            partial[pos * p.slices + slice] = vec2<u32>(bitcast<u32>(d), i);
        }
    }
}
