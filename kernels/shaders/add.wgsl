// Residual add, in place: dst[n][y][x] += src[n][y][x] over the interiors of two NHWC4
// activations of the same shape with their own zero borders. Rust side: src/ops/add.rs.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    c4: u32,
    dst_border: u32,
    src_border: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if t >= p.batch * p.h * p.w * p.c4 {
        return;
    }
    let c = t % p.c4;
    let px = t / p.c4;
    let x = px % p.w;
    let rest = px / p.w;
    let y = rest % p.h;
    let n = rest / p.h;
    let db = p.dst_border;
    let sb = p.src_border;
    let d = ((n * (p.h + 2u * db) + y + db) * (p.w + 2u * db) + x + db) * p.c4 + c;
    let s = ((n * (p.h + 2u * sb) + y + sb) * (p.w + 2u * sb) + x + sb) * p.c4 + c;
    dst[d] = dst[d] + src[s];
}
