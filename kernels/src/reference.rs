//! A plain-Rust CPU reference of the whole inference path, accumulating in f64.
//!
//! It is written for clarity, not speed, in the most direct NCHW loops, and is the yardstick the
//! GPU engine is tested against. The preprocessing here *defines* the preprocessing contract
//! that training (burn) must reproduce:
//!
//! 1. Crop the (clipped) region of interest.
//! 2. Bilinear resize to the model input with half-pixel centres
//!    (`src = (dst + 0.5) · roi / out − 0.5`, clamped to the region's edge pixels).
//! 3. Channels: gray → RGB replicates; RGB(A) → gray is `0.299 R + 0.587 G + 0.114 B`;
//!    alpha is ignored.
//! 4. Scale to 0..1 (`/255`), then `(v − mean[c]) / std[c]`.
//!
//! With `Resize::Fit` step 2 resizes into the top-left `InputSpec::content_size` rectangle
//! and the rest of the input is 0 (after normalisation).

use crate::frame::{Frame, PixelFormat};
use crate::model::Model;
use crate::spec::{InputSpec, Layer};
use crate::{Heatmap, Inference};

/// Preprocesses one frame into a `[c, h, w]` tensor (row-major) for the model input.
pub fn preprocess(model: &Model, frame: &Frame<'_>) -> Result<Vec<f64>, String> {
    preprocess_input(&model.spec.input, frame)
}

/// [`preprocess`] for an input description: the one preprocessing contract, also used to build
/// training tensors.
pub fn preprocess_input(inp: &InputSpec, frame: &Frame<'_>) -> Result<Vec<f64>, String> {
    let roi = frame.effective_roi()?;
    let (c, oh, ow) = (
        inp.channels as usize,
        inp.height as usize,
        inp.width as usize,
    );
    let bpp = frame.format.bytes_per_pixel() as usize;
    let px = |x: usize, y: usize| -> [f64; 3] {
        let i = ((roi.y as usize + y) * frame.width as usize + roi.x as usize + x) * bpp;
        match frame.format {
            PixelFormat::Gray8 => [frame.data[i] as f64; 3],
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => [
                frame.data[i] as f64,
                frame.data[i + 1] as f64,
                frame.data[i + 2] as f64,
            ],
        }
    };
    let sample = |dst: usize, out: usize, len: u32| -> (usize, usize, f64) {
        let s = ((dst as f64 + 0.5) * len as f64 / out as f64 - 0.5).clamp(0.0, (len - 1) as f64);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(len as usize - 1), s - i0 as f64)
    };
    let mut out = vec![0.0; c * oh * ow];
    let (cw, ch) = inp.content_size(roi.width, roi.height);
    let (cw, ch) = (cw as usize, ch as usize);
    for y in 0..ch {
        let (y0, y1, fy) = sample(y, ch, roi.height);
        for x in 0..cw {
            let (x0, x1, fx) = sample(x, cw, roi.width);
            let (a, b, cc, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
            let mut rgb = [0.0; 3];
            for k in 0..3 {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = cc[k] + (d[k] - cc[k]) * fx;
                rgb[k] = (top + (bottom - top) * fy) / 255.0;
            }
            let values = if c == 1 {
                vec![0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]]
            } else {
                rgb.to_vec()
            };
            for (ch, v) in values.into_iter().enumerate() {
                out[(ch * oh + y) * ow + x] = (v - inp.mean[ch] as f64) / inp.std[ch] as f64;
            }
        }
    }
    Ok(out)
}

/// Runs the forward pass from an already preprocessed `[c, h, w]` input that fills the whole
/// model input.
pub fn forward_tensor(model: &Model, input: Vec<f64>) -> Inference {
    let inp = &model.spec.input;
    forward_tensor_in(model, input, (inp.width, inp.height))
}

/// Every layer's output (`outputs[i]` = layer `i`'s, `[c, h, w]`), from a preprocessed input.
pub fn layer_outputs(model: &Model, input: Vec<f64>) -> Vec<Vec<f64>> {
    let inp = &model.spec.input;
    run_layers(model, input, (inp.width, inp.height)).0
}

/// [`forward_tensor`] for an input whose image fills only the top-left `content`
/// `(width, height)` (see `InputSpec::content_size`).
pub fn forward_tensor_in(model: &Model, input: Vec<f64>, content: (u32, u32)) -> Inference {
    let (outputs, heat_values, class_index) = run_layers(model, input, content);
    let plan = &model.plan;
    let logits = outputs.last().cloned().unwrap_or_default();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let probabilities: Vec<f32> = exps.iter().map(|e| (e / sum) as f32).collect();
    let hs = plan.heatmap_shape();
    let (values, class_index) = match heat_values {
        Some(v) => (v, class_index),
        None => {
            let class_index = most_likely_fail_class(&probabilities, &plan.is_pass);
            let (c, h, w) = (hs.c as usize, hs.h as usize, hs.w as usize);
            let Some(lw) = &model.weights[plan.linear_layer] else {
                unreachable!("validated")
            };
            let heat_input = if plan.gap_layer == 0 {
                &outputs[0]
            } else {
                &outputs[plan.gap_layer - 1]
            };
            let values = (0..h * w)
                .map(|p| {
                    (0..c)
                        .map(|ch| {
                            lw.weight[class_index * c + ch] as f64 * heat_input[ch * h * w + p]
                        })
                        .sum::<f64>() as f32
                })
                .collect();
            (values, class_index)
        }
    };
    // The engine's crop: the content's own size stands in for the region (`content_size` of
    // a content size is itself).
    let heatmap = crate::crop_heatmap(
        &model.spec.input,
        content,
        Heatmap {
            width: hs.w,
            height: hs.h,
            class_index,
            values,
        },
    );
    Inference {
        probabilities,
        heatmap,
    }
}

/// The layers' outputs, and for a [`Layer::DefectMaxPool`] its margin map and winning class.
fn run_layers(
    model: &Model,
    input: Vec<f64>,
    content: (u32, u32),
) -> (Vec<Vec<f64>>, Option<Vec<f32>>, usize) {
    let plan = &model.plan;
    let spec = &model.spec;
    let mut outputs: Vec<Vec<f64>> = Vec::with_capacity(spec.layers.len());
    let mut heat = None;
    let mut heat_class = 0;
    for (i, layer) in spec.layers.iter().enumerate() {
        let act: &[f64] = if i == 0 { &input } else { &outputs[i - 1] };
        let s = plan.shapes[i];
        let o = plan.shapes[i + 1];
        let (ic, ih, iw) = (s.c as usize, s.h as usize, s.w as usize);
        let (oc, oh, ow) = (o.c as usize, o.h as usize, o.w as usize);
        let out = match *layer {
            Layer::Conv2d {
                kernel,
                stride,
                groups,
                ..
            } => {
                let Some(w) = &model.weights[i] else {
                    unreachable!("validated")
                };
                let [pt, pl, _, _] = layer.conv_pads();
                let (k, st) = (kernel as usize, stride as usize);
                let depthwise = groups > 1;
                let per_group = if depthwise { 1 } else { ic };
                let mut out = vec![0.0; oc * oh * ow];
                for co in 0..oc {
                    let inputs = if depthwise { co..co + 1 } else { 0..ic };
                    for y in 0..oh {
                        for x in 0..ow {
                            let mut acc = w.bias[co] as f64;
                            for (j, ci) in inputs.clone().enumerate() {
                                for ky in 0..k {
                                    let sy = (y * st + ky) as isize - pt as isize;
                                    if sy < 0 || sy >= ih as isize {
                                        continue;
                                    }
                                    for kx in 0..k {
                                        let sx = (x * st + kx) as isize - pl as isize;
                                        if sx < 0 || sx >= iw as isize {
                                            continue;
                                        }
                                        let wv = w.weight[((co * per_group + j) * k + ky) * k + kx]
                                            as f64;
                                        acc += wv * act[(ci * ih + sy as usize) * iw + sx as usize];
                                    }
                                }
                            }
                            out[(co * oh + y) * ow + x] = acc;
                        }
                    }
                }
                out
            }
            Layer::Relu => act.iter().map(|v| v.max(0.0)).collect(),
            Layer::Relu6 => act.iter().map(|v| v.clamp(0.0, 6.0)).collect(),
            Layer::Add { from } => act.iter().zip(&outputs[from]).map(|(a, b)| a + b).collect(),
            Layer::LocalFeatures { ref from, kernel } => {
                let k = kernel as usize;
                let r = (k / 2) as isize;
                let mut out = Vec::with_capacity(oc * oh * ow);
                for &f in from {
                    let src = plan.shapes[f + 1];
                    let st = crate::spec::local_stride(src, o) as usize;
                    let (sc, sh, sw) = (src.c as usize, src.h as usize, src.w as usize);
                    let data = &outputs[f];
                    for c in 0..sc {
                        for y in 0..oh {
                            for x in 0..ow {
                                let mut acc = 0.0;
                                for dy in 0..k {
                                    let sy = (y * st + dy) as isize - r;
                                    if sy < 0 || sy >= sh as isize {
                                        continue;
                                    }
                                    for dx in 0..k {
                                        let sx = (x * st + dx) as isize - r;
                                        if sx < 0 || sx >= sw as isize {
                                            continue;
                                        }
                                        acc += data[(c * sh + sy as usize) * sw + sx as usize];
                                    }
                                }
                                out.push(acc / (k * k) as f64);
                            }
                        }
                    }
                }
                out
            }
            Layer::MaxPool2d { kernel, stride } => {
                let (k, st) = (kernel as usize, stride as usize);
                let mut out = vec![f64::NEG_INFINITY; oc * oh * ow];
                for c in 0..oc {
                    for y in 0..oh {
                        for x in 0..ow {
                            let m = &mut out[(c * oh + y) * ow + x];
                            for ky in 0..k {
                                for kx in 0..k {
                                    *m = m.max(act[(c * ih + y * st + ky) * iw + x * st + kx]);
                                }
                            }
                        }
                    }
                }
                out
            }
            Layer::GlobalAvgPool => {
                let hw = ih * iw;
                (0..ic)
                    .map(|c| act[c * hw..(c + 1) * hw].iter().sum::<f64>() / hw as f64)
                    .collect()
            }
            Layer::GlobalMaxPool => {
                let hw = ih * iw;
                (0..ic)
                    .map(|c| {
                        act[c * hw..(c + 1) * hw]
                            .iter()
                            .cloned()
                            .fold(f64::NEG_INFINITY, f64::max)
                    })
                    .collect()
            }
            Layer::DefectMaxPool => {
                let inp = &spec.input;
                let vw = crate::spec::valid_cells(content.0, s.w, inp.width) as usize;
                let vh = crate::spec::valid_cells(content.1, s.h, inp.height) as usize;
                let hw = ih * iw;
                let mut margins = vec![0f32; hw];
                let mut best = (f64::NEG_INFINITY, 0usize, 0usize);
                for y in 0..ih {
                    for x in 0..iw {
                        let p = y * iw + x;
                        let (mut fail, mut fail_k, mut pass) =
                            (f64::NEG_INFINITY, 0, f64::NEG_INFINITY);
                        for k in 0..ic {
                            let v = act[k * hw + p];
                            if plan.is_pass[k] {
                                pass = pass.max(v);
                            } else if v > fail {
                                fail = v;
                                fail_k = k;
                            }
                        }
                        let m = fail - pass;
                        if y < vh && x < vw {
                            margins[p] = m as f32;
                            if m > best.0 {
                                best = (m, p, fail_k);
                            }
                        }
                    }
                }
                // Padding cells show the weakest valid margin, so they never draw the eye.
                let floor = (0..hw)
                    .filter(|p| p / iw < vh && p % iw < vw)
                    .map(|p| margins[p])
                    .fold(f32::INFINITY, f32::min);
                for p in 0..hw {
                    if !(p / iw < vh && p % iw < vw) {
                        margins[p] = floor;
                    }
                }
                heat = Some(margins);
                heat_class = best.2;
                (0..ic).map(|k| act[k * hw + best.1]).collect()
            }
            Layer::MemoryBank {
                entries,
                features,
                neighbors,
            } => {
                let Some(w) = &model.weights[i] else {
                    unreachable!("validated")
                };
                let (m, d) = (entries as usize, features as usize);
                let (center, scale) = (w.bias[0] as f64, w.bias[1] as f64);
                let inp = &spec.input;
                let vw = crate::spec::valid_cells(content.0, s.w, inp.width) as usize;
                let vh = crate::spec::valid_cells(content.1, s.h, inp.height) as usize;
                let hw = ih * iw;
                let entry = |e: usize| &w.weight[e * d..(e + 1) * d];
                let feature = |p: usize| (0..d).map(move |c| act[c * hw + p]);
                let dist2 = |p: usize, e: usize| -> f64 {
                    feature(p)
                        .zip(entry(e))
                        .map(|(f, &b)| (f - b as f64).powi(2))
                        .sum()
                };
                let mut z = vec![0f32; hw];
                // (raw score, position, nearest entry) of the worst valid position.
                let mut best = (f64::NEG_INFINITY, 0usize, 0usize);
                for p in 0..hw {
                    let (near, nd) = (0..m)
                        .map(|e| (e, dist2(p, e)))
                        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
                    let score = nd.sqrt();
                    z[p] = ((score - center) / scale) as f32;
                    let valid = p / iw < vh && p % iw < vw;
                    if valid && score > best.0 {
                        best = (score, p, near);
                    }
                }
                let floor = (0..hw)
                    .filter(|p| p / iw < vh && p % iw < vw)
                    .map(|p| z[p])
                    .fold(f32::INFINITY, f32::min);
                for (p, v) in z.iter_mut().enumerate() {
                    if !(p / iw < vh && p % iw < vw) {
                        *v = floor;
                    }
                }
                let (raw, wp, near) = best;
                // The support: the nearest entry and its `neighbors − 1` nearest other entries
                // (ties to the lower index), and the winning feature's distances to them.
                let mut others: Vec<(f64, usize)> = (0..m)
                    .filter(|&e| e != near)
                    .map(|e| {
                        let d2: f64 = entry(near)
                            .iter()
                            .zip(entry(e))
                            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                            .sum();
                        (d2, e)
                    })
                    .collect();
                others.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let mut dists = vec![raw];
                dists.extend(
                    others
                        .iter()
                        .take(neighbors as usize - 1)
                        .map(|&(_, e)| dist2(wp, e).sqrt()),
                );
                let score = if dists.len() > 1 {
                    let mx = dists.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = dists.iter().map(|v| (v - mx).exp()).sum();
                    (1.0 - (dists[0] - mx).exp() / sum) * raw
                } else {
                    raw
                };
                heat = Some(z);
                heat_class = 1;
                vec![0.0, (score - center) / scale]
            }
            Layer::Linear {
                in_features,
                out_features,
            } => {
                let Some(w) = &model.weights[i] else {
                    unreachable!("validated")
                };
                let (fi, fo) = (in_features as usize, out_features as usize);
                (0..fo)
                    .map(|o| {
                        w.bias[o] as f64
                            + (0..fi)
                                .map(|j| w.weight[o * fi + j] as f64 * act[j])
                                .sum::<f64>()
                    })
                    .collect()
            }
        };
        outputs.push(out);
    }
    (outputs, heat, heat_class)
}

/// Preprocesses and runs one frame.
pub fn infer(model: &Model, frame: &Frame<'_>) -> Result<Inference, String> {
    let roi = frame.effective_roi()?;
    let content = model.spec.input.content_size(roi.width, roi.height);
    Ok(forward_tensor_in(model, preprocess(model, frame)?, content))
}

/// Index of the most probable FAIL class (ties go to the lower index).
pub fn most_likely_fail_class(probabilities: &[f32], is_pass: &[bool]) -> usize {
    let mut best = usize::MAX;
    for (i, (&p, &pass)) in probabilities.iter().zip(is_pass).enumerate() {
        if !pass && (best == usize::MAX || p > probabilities[best]) {
            best = i;
        }
    }
    best
}
