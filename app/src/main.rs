//! The `inspector` binary: everything lives in the library; this only maps errors to an exit code.

fn main() -> std::process::ExitCode {
    private_runtime_dir();
    inspector::cli::main()
}

/// Without `XDG_RUNTIME_DIR` (a server, a service, CI) libwayland prints "XDG_RUNTIME_DIR is
/// invalid or not set" each time wgpu's Vulkan instance starts (Mesa's WSI probes Wayland),
/// 2–6 times for every windowless command. Such a process gets a private one: a 0700 folder of
/// its user's under the temp folder (no Wayland socket there, so nothing connects; X11 and
/// headless work as before). A session that has one keeps it.
fn private_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("inspector-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // Only a folder of ours that no one else can enter.
    let ours = std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
    if ours {
        #[allow(unsafe_code)]
        // SAFETY: `set_var` is unsound only while another thread reads or writes the
        // environment; this is the first thing `main` does, before any thread exists (no
        // logging, GPU, runtime or worker thread has started yet).
        unsafe {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
