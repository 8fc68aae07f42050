//! The files that ship with the app (the default model, the backbone, the demo images) and
//! where to find them from an install or the source tree.

use std::path::PathBuf;

/// The bundled default model, relative to the repository / install root.
pub const DEFAULT_MODEL: &str = "assets/models/default.safetensors";
/// The bundled demo images.
pub const DEMO_DATASET: &str = "datasets/magnetic-tile-demo";

/// Finds a bundled file: next to the executable's ancestors, then the working directory, then
/// the source tree this binary was built from.
pub fn bundled(rel: &str) -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join(rel)));
    }
    candidates.push(PathBuf::from(rel));
    candidates.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel),
    );
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(rel))
}
