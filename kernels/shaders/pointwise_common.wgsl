// Shared by pointwise_gemm.wgsl and pointwise_split_reduce.wgsl (prepended to each by
// src/ops/pointwise_gemm.rs): the parameters of one 1×1 convolution (one struct for both passes
// of a split product, so they cannot disagree on a field) and the pixel addressing.

struct Params {
    batch: u32,
    h: u32,
    w: u32,
    in_c4: u32,
    out_c4: u32,
    in_border: u32,
    out_border: u32,
    act: u32,          // 0 none, 1 relu, 2 relu6
    res: u32,          // 1: add `res` after the activation (the residual skip)
    res_border: u32,
    splits: u32,       // K slices (1: whole product + epilogue here)
    k_chunk: u32,      // input vec4s per slice, a multiple of BK (>= in_c4 when unsplit)
}

// Index of the first vec4 of pixel m in an NHWC4 tensor with border b and `c4` vec4s per pixel.
fn pixel_base(m: u32, b: u32, c4: u32) -> u32 {
    let hw = p.h * p.w;
    let n = m / hw;
    let r = m % hw;
    let y = r / p.w;
    let x = r % p.w;
    return ((n * (p.h + 2u * b) + y + b) * (p.w + 2u * b) + x + b) * c4;
}
