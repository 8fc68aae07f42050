//! The `inspector` binary: everything lives in the library; this only maps errors to an exit code.

fn main() -> std::process::ExitCode {
    inspector::cli::main()
}
