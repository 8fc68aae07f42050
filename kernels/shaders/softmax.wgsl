// Softmax over each image's logits, plus the choice of the heatmap class: the most probable
// class that is not a PASS class (ties go to the lower index).
//   logits: [n][k]; is_pass: [k] (1 = PASS class)
//   out:    probabilities at out[n * k + j]; heat_class[n] = chosen class
// One invocation per image. Rust side: src/ops/softmax.rs.

struct Params {
    batch: u32,
    classes: u32,
    keep_class: u32,    // 1: heat_class was chosen by the defect max pool; leave it
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> is_pass: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> heat_class: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.batch {
        return;
    }
    let k = p.classes;
    let base = n * k;
    var m = logits[base];
    for (var j = 1u; j < k; j++) {
        m = max(m, logits[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < k; j++) {
        s += exp(logits[base + j] - m);
    }
    var best = k;
    var best_p = -1.0;
    for (var j = 0u; j < k; j++) {
        let prob = exp(logits[base + j] - m) / s;
        out[base + j] = prob;
        if is_pass[j] == 0u && prob > best_p {
            best = j;
            best_p = prob;
        }
    }
    if p.keep_class == 0u {
        heat_class[n] = best;
    }
}
