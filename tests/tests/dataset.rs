//! Dataset parsing, both layouts, and every bad-data case.

use std::path::Path;

use inspector::data::dataset::{Dataset, DatasetError, Layout, decode_image};
use integration_tests::{synthetic_manifest, write_synthetic};

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, bytes).expect("write");
}

#[test]
fn manifest_layout_with_optional_columns_and_empty_cells() {
    let dir = tempfile::tempdir().expect("tmp");
    let rows = synthetic_manifest(dir.path(), 3, 1, 1);
    let ds = Dataset::open(dir.path()).expect("open");
    assert_eq!(ds.layout, Layout::Manifest);
    assert_eq!(ds.samples.len(), rows.len() - 1);
    assert_eq!(ds.classes(), vec!["good", "scratch", "spot"]);
    assert_eq!(ds.split("train").len(), 9);
    assert!(
        ds.samples
            .iter()
            .all(|s| s.mask.is_none() && s.group.is_none()),
        "empty cells are None"
    );
    assert_eq!(ds.pass_classes(&[]).expect("default pass"), vec!["good"]);
    assert!(
        ds.pass_classes(&["nope".into()])
            .expect_err("unknown")
            .to_string()
            .contains("nope")
    );
}

#[test]
fn class_folder_layouts_with_and_without_split_folders() {
    let dir = tempfile::tempdir().expect("tmp");
    for (i, c) in ["OK", "dent"].iter().enumerate() {
        for j in 0..3 {
            write_synthetic(
                &dir.path().join(format!("{c}/{j}.png")),
                "good",
                20,
                20,
                (i * 10 + j) as u64,
            );
        }
    }
    write(dir.path(), "OK/notes.txt", b"not an image");
    let ds = Dataset::open(dir.path()).expect("open");
    assert_eq!(ds.layout, Layout::ClassFolders);
    assert_eq!(ds.samples.len(), 6);
    assert_eq!(ds.pass_classes(&[]).expect("OK is a pass name"), vec!["OK"]);
    // No split column: val is carved out, stratified, seeded.
    let (t1, v1) = ds.train_val("train", "val", 0.34, 7).expect("carve");
    let (t2, v2) = ds.train_val("train", "val", 0.34, 7).expect("carve again");
    assert_eq!((t1.clone(), v1.clone()), (t2, v2));
    assert_eq!(t1.len() + v1.len(), 6);
    for c in ["OK", "dent"] {
        assert!(
            v1.iter().any(|s| s.label == c) && t1.iter().any(|s| s.label == c),
            "class {c} on both sides"
        );
    }

    let split_dir = tempfile::tempdir().expect("tmp");
    for split in ["train", "val"] {
        for c in ["good", "crack"] {
            write_synthetic(
                &split_dir.path().join(format!("{split}/{c}/a.png")),
                "good",
                16,
                16,
                1,
            );
        }
    }
    let ds = Dataset::open(split_dir.path()).expect("open");
    assert_eq!(ds.split("train").len(), 2);
    assert_eq!(ds.split("val").len(), 2);
}

#[test]
fn groups_stay_on_one_side_of_a_carved_split() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rows = vec!["path,label,group".to_owned()];
    for g in 0..8 {
        for k in 0..3 {
            let label = if g % 2 == 0 { "good" } else { "bad" };
            let rel = format!("{label}/{g}_{k}.png");
            write_synthetic(&dir.path().join(&rel), "good", 12, 12, g * 3 + k);
            rows.push(format!("{rel},{label},g{g}"));
        }
    }
    write(dir.path(), "manifest.csv", rows.join("\n").as_bytes());
    let ds = Dataset::open(dir.path()).expect("open");
    let (train, val) = ds.train_val("train", "val", 0.3, 3).expect("carve");
    for s in &val {
        assert!(
            !train.iter().any(|t| t.group == s.group),
            "group {:?} split across train and val",
            s.group
        );
    }
    assert!(!val.is_empty());
}

#[test]
fn bad_data_gets_defined_answers() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    write_synthetic(&root.join("good/a.png"), "good", 20, 20, 1);
    let png = std::fs::read(root.join("good/a.png")).expect("read");
    write(root, "good/zero.png", b"");
    write(root, "good/truncated.png", &png[..png.len() / 2]);
    write(
        root,
        "good/garbage.jpg",
        b"\xff\xd8\xff\xe0 this is not really a jpeg",
    );
    for (name, why) in [
        ("zero.png", "empty"),
        ("truncated.png", "decode"),
        ("garbage.jpg", "decode"),
    ] {
        let e = decode_image(&root.join("good").join(name)).expect_err(name);
        assert!(e.contains(why), "{name}: {e}");
    }
    assert!(decode_image(&root.join("good/a.png")).is_ok());

    // Missing files are listed, not fatal.
    write(
        root,
        "manifest.csv",
        b"path,label,split\ngood/a.png,good,train\ngood/gone.png,good,train\n",
    );
    let ds = Dataset::open(root).expect("open");
    assert_eq!(ds.missing, vec!["good/gone.png"]);
    assert_eq!(ds.samples.len(), 1);

    // Paths leaving the folder are refused.
    for bad in ["../outside.png", "/etc/passwd", "good/../../x.png"] {
        write(
            root,
            "manifest.csv",
            format!("path,label\n{bad},good\n").as_bytes(),
        );
        let e = Dataset::open(root).expect_err(bad);
        assert!(
            matches!(e, DatasetError::Manifest { line: 2, .. })
                && e.to_string().contains("leaves the dataset folder"),
            "{bad}: {e}"
        );
    }
    // Broken manifests name the line.
    write(root, "manifest.csv", b"file,class\ngood/a.png,good\n");
    assert!(
        Dataset::open(root)
            .expect_err("columns")
            .to_string()
            .contains("`path` and `label`")
    );
    write(root, "manifest.csv", b"path,label\ngood/a.png,good,extra\n");
    assert!(matches!(
        Dataset::open(root),
        Err(DatasetError::Manifest { .. })
    ));
    // An empty label is an unlabelled row: listed for the Label tab, never trained on.
    write(root, "manifest.csv", b"path,label\ngood/a.png,\n");
    let ds = Dataset::open(root).expect("unlabelled rows are allowed");
    assert_eq!(ds.unlabelled, ["good/a.png"]);
    assert!(ds.samples.is_empty());

    // Class rules, checked before any training.
    write_synthetic(&root.join("bad/b.png"), "spot", 20, 20, 2);
    write(
        root,
        "manifest.csv",
        b"path,label,split\ngood/a.png,good,train\nbad/b.png,bad,val\n",
    );
    let e = Dataset::open(root)
        .expect("open")
        .train_val("train", "val", 0.2, 1)
        .expect_err("one class");
    assert!(e.to_string().contains("at least two classes"), "{e}");
    assert!(e.to_string().contains("--mode anomaly"), "{e}");
    write(
        root,
        "manifest.csv",
        b"path,label,split\ngood/a.png,good,train\nbad/b.png,bad,train\ngood/a.png,crack,val\n",
    );
    let e = Dataset::open(root)
        .expect("open")
        .train_val("train", "val", 0.2, 1)
        .expect_err("val label");
    assert!(e.to_string().contains("crack"), "{e}");
    assert!(Dataset::open(&root.join("nope")).is_err());
}

/// A split that does not exist is named together with the splits that do, in training and in
/// eval.
#[test]
fn a_missing_split_is_named_with_the_splits_that_exist() {
    let dir = tempfile::tempdir().expect("tmp");
    integration_tests::synthetic_manifest(dir.path(), 3, 2, 9);
    let ds = inspector::data::dataset::Dataset::open(dir.path()).expect("open");
    assert_eq!(ds.split_names(), "train, val");
    let e = ds
        .train_val("nope", "val", 0.2, 1)
        .expect_err("no such split")
        .to_string();
    assert!(
        e.contains("\"nope\"") && e.contains("the dataset has: train, val"),
        "{e}"
    );
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/models/default.safetensors");
    let e = inspector::evaluation::eval::evaluate(&model, dir.path(), Some("test"))
        .expect_err("no test split")
        .to_string();
    assert!(
        e.contains("\"test\"") && e.contains("the dataset has: train, val"),
        "{e}"
    );
}
