//! Where a run keeps its checkpoint (`<out>.ckpt/`) and which epoch it holds, for either kind
//! of trainer: the from-scratch trainer writes `state.json`, the head trainer
//! [`HEAD_CHECKPOINT`].

use std::path::{Path, PathBuf};

/// The head trainer's checkpoint record inside the checkpoint folder.
pub const HEAD_CHECKPOINT: &str = "head.json";

/// Checkpoint folder next to the model file: `<out>.ckpt/`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

/// The last finished epoch kept in the checkpoint next to `out` (either kind of preset), if
/// there is one: what a resumed run continues from.
pub fn checkpoint_epoch(out: &Path) -> Option<usize> {
    let dir = checkpoint_dir(out);
    ["state.json", HEAD_CHECKPOINT]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find_map(|v| v["epoch"].as_u64())
        .map(|e| e as usize)
}
