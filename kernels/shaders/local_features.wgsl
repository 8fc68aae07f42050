// Local features, one source per dispatch: a k×k average of one NHWC4 activation (zero
// padding k/2, always divided by k²) at `stride`, written into channels
// [c_offset, c_offset + src_c) of the destination (NHWC4 with border, addressed as f32 so a
// source whose channel count is not a multiple of 4 packs tightly).
// Rust side: src/ops/local_features.rs.

struct Params {
    batch: u32,
    src_h: u32,
    src_w: u32,
    src_c4: u32,
    src_border: u32,
    src_c: u32,
    stride: u32,
    kernel: u32,
    dst_h: u32,
    dst_w: u32,
    dst_c4: u32,
    dst_border: u32,
    c_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.batch * p.dst_h * p.dst_w * p.src_c4 {
        return;
    }
    let c4 = t % p.src_c4;
    let px = t / p.src_c4;
    let x = px % p.dst_w;
    let rest = px / p.dst_w;
    let y = rest % p.dst_h;
    let n = rest / p.dst_h;
    let r = i32(p.kernel / 2u);
    let sb = p.src_border;
    let spw = p.src_w + 2u * sb;
    let sph = p.src_h + 2u * sb;
    var acc = vec4<f32>(0.0);
    for (var dy = 0; dy < i32(p.kernel); dy++) {
        let sy = i32(y * p.stride) + dy - r;
        if sy < 0 || sy >= i32(p.src_h) {
            continue;
        }
        for (var dx = 0; dx < i32(p.kernel); dx++) {
            let sx = i32(x * p.stride) + dx - r;
            if sx < 0 || sx >= i32(p.src_w) {
                continue;
            }
            acc += src[((n * sph + u32(sy) + sb) * spw + u32(sx) + sb) * p.src_c4 + c4];
        }
    }
    acc = acc / f32(p.kernel * p.kernel);
    let db = p.dst_border;
    let base = (((n * (p.dst_h + 2u * db) + y + db) * (p.dst_w + 2u * db) + x + db) * p.dst_c4) * 4u
        + p.c_offset + c4 * 4u;
    for (var j = 0u; j < 4u; j++) {
        if c4 * 4u + j < p.src_c {
            dst[base + j] = acc[j];
        }
    }
}
