//! Every WGSL kernel parses and validates with naga, so a broken shader fails here and not on
//! a user's first frame.

#[test]
fn every_shader_validates_with_naga() {
    // `*_common.wgsl` files are preludes, prepended to the kernels that share them; every
    // other file is a kernel of its own.
    let files: Vec<(String, String)> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .expect("shaders/")
            .map(|e| {
                let path = e.expect("entry").path();
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).expect("read");
                (name, text)
            })
            .collect();
    let (preludes, kernels_files): (Vec<_>, Vec<_>) =
        files.iter().partition(|(n, _)| n.ends_with("_common.wgsl"));
    assert_eq!(
        kernels::ops::SHADERS.len(),
        kernels_files.len(),
        "every kernel file in shaders/ must be listed in ops::SHADERS"
    );
    for (name, text) in &preludes {
        assert!(
            kernels::ops::SHADERS
                .iter()
                .any(|(_, s)| s.starts_with(text.as_str())),
            "{name} is prepended to no kernel"
        );
    }
    for (name, source) in kernels::ops::SHADERS {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == "main" && e.stage == naga::ShaderStage::Compute),
            "{name}: no compute entry point `main`"
        );
    }
}
