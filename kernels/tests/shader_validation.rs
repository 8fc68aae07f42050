//! Every WGSL kernel parses and validates with naga, so a broken shader fails here and not on
//! a user's first frame.

#[test]
fn every_shader_validates_with_naga() {
    assert_eq!(
        kernels::ops::SHADERS.len(),
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .map(|d| d.count())
            .unwrap_or(0),
        "every file in shaders/ must be listed in ops::SHADERS"
    );
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
