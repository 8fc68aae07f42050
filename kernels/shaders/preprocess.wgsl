// Preprocess: raw 8-bit frames -> normalised model input, NHWC4 with a zero border.
// Mirrors `reference::preprocess` (crop ROI, bilinear with half-pixel centres, channel
// conversion, (v/255 - mean) / std). Rust side: src/ops/preprocess.rs.

struct Params {
    out_w: u32,
    out_h: u32,
    out_border: u32,
    channels: u32,      // model channels: 1 or 3
    batch: u32,
    fit: u32,           // 1: keep the aspect ratio (top-left, rest = normalised 0)
    _pad1: u32,
    _pad2: u32,
    mean: vec4<f32>,
    inv_std: vec4<f32>,
}

// One per frame; mirrors `FrameDesc` in src/ops/preprocess.rs.
struct FrameDesc {
    offset: u32,        // byte offset of the frame in `pixels`
    width: u32,
    height: u32,
    bytes_per_pixel: u32,
    roi_x: u32,
    roi_y: u32,
    roi_w: u32,
    roi_h: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> frames: array<FrameDesc>;
@group(0) @binding(2) var<storage, read> pixels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;
// Per frame: the (width, height) of the input the region fills (`InputSpec::content_size`).
@group(0) @binding(4) var<storage, read_write> content: array<u32>;

fn byte_at(i: u32) -> f32 {
    return f32((pixels[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu);
}

fn texel(f: FrameDesc, x: u32, y: u32) -> vec3<f32> {
    let i = f.offset + ((f.roi_y + y) * f.width + f.roi_x + x) * f.bytes_per_pixel;
    if f.bytes_per_pixel == 1u {
        let g = byte_at(i);
        return vec3<f32>(g, g, g);
    }
    return vec3<f32>(byte_at(i), byte_at(i + 1u), byte_at(i + 2u));
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    let n = gid.z;
    if x >= params.out_w || y >= params.out_h || n >= params.batch {
        return;
    }
    let f = frames[n];
    var cw = params.out_w;
    var ch = params.out_h;
    if params.fit != 0u {
        if f.roi_w * params.out_h >= f.roi_h * params.out_w {
            ch = clamp((f.roi_h * params.out_w + f.roi_w / 2u) / f.roi_w, 1u, params.out_h);
        } else {
            cw = clamp((f.roi_w * params.out_h + f.roi_h / 2u) / f.roi_h, 1u, params.out_w);
        }
    }
    if x == 0u && y == 0u {
        content[2u * n] = cw;
        content[2u * n + 1u] = ch;
    }
    let pw = params.out_w + 2u * params.out_border;
    let ph = params.out_h + 2u * params.out_border;
    let at = (n * ph + y + params.out_border) * pw + x + params.out_border;
    if x >= cw || y >= ch {
        dst[at] = vec4<f32>(0.0);
        return;
    }
    let sx = clamp((f32(x) + 0.5) * f32(f.roi_w) / f32(cw) - 0.5, 0.0, f32(f.roi_w - 1u));
    let sy = clamp((f32(y) + 0.5) * f32(f.roi_h) / f32(ch) - 0.5, 0.0, f32(f.roi_h - 1u));
    let x0 = u32(floor(sx));
    let y0 = u32(floor(sy));
    let x1 = min(x0 + 1u, f.roi_w - 1u);
    let y1 = min(y0 + 1u, f.roi_h - 1u);
    let fx = sx - f32(x0);
    let fy = sy - f32(y0);
    let top = mix(texel(f, x0, y0), texel(f, x1, y0), fx);
    let bottom = mix(texel(f, x0, y1), texel(f, x1, y1), fx);
    let rgb = mix(top, bottom, fy) / 255.0;
    var v = vec4<f32>(0.0);
    if params.channels == 1u {
        v.x = dot(rgb, vec3<f32>(0.299, 0.587, 0.114));
    } else {
        v = vec4<f32>(rgb, 0.0);
    }
    // Unused channels stay exactly zero: mean and inv_std are zero there.
    v = (v - params.mean) * params.inv_std;
    dst[at] = v;
}
