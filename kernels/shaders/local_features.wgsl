// Local features, up to four sources in one dispatch: for each source, a k×k average of one
// NHWC4 activation (zero padding k/2, always divided by k²) at that source's stride, written
// into channels [c_offset, c_offset + c) of the destination (NHWC4 with border, addressed as f32
// so a source whose channel count is not a multiple of 4 packs tightly). A layer with more
// sources takes one dispatch per four. Rust side: src/ops/local_features.rs.

struct Source {
    h: u32,
    w: u32,
    c4: u32,
    border: u32,
    c: u32,             // channels
    stride: u32,
    c_offset: u32,      // first destination channel
    first4: u32,        // index of its first vec4 among all sources' vec4s of one pixel
}

struct Params {
    batch: u32,
    kernel: u32,
    dst_h: u32,
    dst_w: u32,
    dst_c4: u32,
    dst_border: u32,
    sources: u32,       // 1..=4
    total4: u32,        // Σ c4 over the sources
    src: array<Source, 4>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src0: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src1: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> src2: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> src3: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;

fn load(s: u32, i: u32) -> vec4<f32> {
    switch s {
        case 0u: { return src0[i]; }
        case 1u: { return src1[i]; }
        case 2u: { return src2[i]; }
        default: { return src3[i]; }
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.batch * p.dst_h * p.dst_w * p.total4 {
        return;
    }
    let j = t % p.total4;
    let px = t / p.total4;
    let x = px % p.dst_w;
    let rest = px / p.dst_w;
    let y = rest % p.dst_h;
    let n = rest / p.dst_h;
    var s = 0u;
    for (var i = 1u; i < p.sources; i++) {
        if j >= p.src[i].first4 {
            s = i;
        }
    }
    let q = p.src[s];
    let c4 = j - q.first4;
    let r = i32(p.kernel / 2u);
    let spw = q.w + 2u * q.border;
    let sph = q.h + 2u * q.border;
    var acc = vec4<f32>(0.0);
    for (var dy = 0; dy < i32(p.kernel); dy++) {
        let sy = i32(y * q.stride) + dy - r;
        if sy < 0 || sy >= i32(q.h) {
            continue;
        }
        for (var dx = 0; dx < i32(p.kernel); dx++) {
            let sx = i32(x * q.stride) + dx - r;
            if sx < 0 || sx >= i32(q.w) {
                continue;
            }
            acc += load(s, ((n * sph + u32(sy) + q.border) * spw + u32(sx) + q.border) * q.c4 + c4);
        }
    }
    acc = acc / f32(p.kernel * p.kernel);
    let db = p.dst_border;
    let base = (((n * (p.dst_h + 2u * db) + y + db) * (p.dst_w + 2u * db) + x + db) * p.dst_c4) * 4u
        + q.c_offset + c4 * 4u;
    for (var k = 0u; k < 4u; k++) {
        if c4 * 4u + k < q.c {
            dst[base + k] = acc[k];
        }
    }
}
