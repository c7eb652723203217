//! Names that are not UTF-8 (issue 14), against GNU tar and Go.
//!
//! A tree whose names are in Latin-1 (`caf\xe9`), KOI8-R and CP866
//! (`Привет`) and EUC-JP (`日本語`), as directories, files, symlinks and
//! their targets, hard links, names past 100 bytes (so that GNU long names
//! and PAX `path` records carry them) and, in a second layer, whiteouts
//! (`.wh.` + such a name), is tarred by GNU tar (`--format=gnu` and
//! `--format=posix`) and by Go's `archive/tar` as container engines write
//! layers (`tests/tar_writer/main.go`). Each pair of layers is unpacked
//! by [`flatten_layers`] and by GNU tar (then its whiteouts applied): the
//! two trees must be equal byte for byte (names, types, modes, owners,
//! link targets, data, which names are one inode).
//!
//! Without GNU tar (or `go`, for the Go-written layers) the test prints
//! `SKIP` and passes, unless `LAYERSTACK_REQUIRE_TOOLS` is set.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use camino::Utf8Path;
use layerstack::Layer;
use layerstack::oci::{
    Compression, ExportOptions, FlattenOptions, ImportOptions, LayerDigests, export_layer,
    flatten_layers, import_layer,
};

use crate::support::legacy_names::{
    NAMES, cat, comparable, first_layer, gnu_tar_create, gnu_tar_unpack, have_gnu_tar,
    second_layer, shown, tree,
};
use crate::support::tools::{Scratch, go_build, run};

/// The first difference between GNU tar's tree and ours, in words.
fn difference(want: &Path, got: &Path) -> Option<String> {
    let want = comparable(tree(want));
    let got = comparable(tree(got));
    for (path, w) in &want {
        match got.get(path) {
            None => return Some(format!("`{}` is missing: {w:?}", shown(path))),
            Some(g) if g != w => {
                return Some(format!(
                    "`{}` differs:\n  GNU tar: {w:?}\n  ours:    {g:?}",
                    shown(path)
                ));
            }
            Some(_) => {}
        }
    }
    got.keys()
        .find(|p| !want.contains_key(*p))
        .map(|p| format!("`{}` is extra: {:?}", shown(p), got[p]))
}

/// The layers written each way: (how, bottom layer, top layer).
fn layers(scratch: &Scratch, test: &str) -> Vec<(String, PathBuf, PathBuf)> {
    let trees = [scratch.0.join("tree1"), scratch.0.join("tree2")];
    first_layer(trees[0].as_std_path());
    second_layer(trees[1].as_std_path());
    let mut out = Vec::new();
    for format in ["gnu", "posix"] {
        let tars: Vec<PathBuf> = (0..2)
            .map(|i| {
                scratch
                    .0
                    .join(format!("{format}-{i}.tar"))
                    .into_std_path_buf()
            })
            .collect();
        for (tree, tar) in trees.iter().zip(&tars) {
            gnu_tar_create(tree.as_std_path(), format, tar);
        }
        out.push((
            format!("GNU tar --format={format}"),
            tars[0].clone(),
            tars[1].clone(),
        ));
    }
    if let Some(writer) = go_build("tar_writer", test) {
        let tars: Vec<PathBuf> = (0..2)
            .map(|i| scratch.0.join(format!("go-{i}.tar")).into_std_path_buf())
            .collect();
        for (tree, tar) in trees.iter().zip(&tars) {
            run(Command::new(&writer).arg(tree.as_std_path()).arg(tar));
        }
        out.push(("Go archive/tar".into(), tars[0].clone(), tars[1].clone()));
    }
    out
}

#[test]
fn unpack_of_names_in_legacy_charsets_equals_gnu_tar() {
    let test = "unpack_of_names_in_legacy_charsets_equals_gnu_tar";
    if !have_gnu_tar(test) {
        return;
    }
    let scratch = Scratch::new("names");
    for (how, bottom, top) in layers(&scratch, test) {
        let tag = how.replace(['=', ' ', '/', '-'], "_");
        let want = scratch.0.join(format!("want-{tag}"));
        gnu_tar_unpack(&[bottom.clone(), top.clone()], want.as_std_path());

        // The fixture holds what it should (so that an empty tree on both
        // sides cannot pass).
        let want_tree = tree(want.as_std_path());
        for name in NAMES {
            let gone = cat(&[b"gone/", name]);
            assert!(!want_tree.contains_key(&gone), "{how}: {}", shown(&gone));
        }
        assert_eq!(
            want_tree[&cat(&[NAMES[0], b"/", NAMES[0]])].data,
            cat(&[NAMES[0], b"\n"])
        );
        assert!(!want_tree.contains_key(NAMES[3]));
        assert_eq!(want_tree.len(), 1 + 4 + 1 + 3 * 5 + 2, "{how}");

        let got = scratch.0.join(format!("got-{tag}"));
        let openers: Vec<_> = [bottom, top]
            .into_iter()
            .map(|tar| {
                move || -> layerstack::Result<Box<dyn Read + Send>> {
                    Ok(Box::new(fs::File::open(&tar).unwrap()))
                }
            })
            .collect();
        flatten_layers(
            &openers,
            Utf8Path::new(got.as_str()),
            &FlattenOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{how}: unpack failed: {e}"));

        if let Some(d) = difference(want.as_std_path(), got.as_std_path()) {
            panic!("{how}: ours differs from GNU tar's extraction: {d}");
        }
    }
}

/// What a tar says about the names of one entry: the ustar name and
/// linkname fields and the PAX `path` and `linkpath` records.
#[derive(Debug, PartialEq, Eq)]
struct NameFields {
    name_field: Vec<u8>,
    link_field: Vec<u8>,
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
}

/// The name fields of every entry of an uncompressed tar, keyed by the
/// full name (the PAX `path`, else the name field) without a leading `./`
/// or trailing `/`.
fn name_fields(tar: &[u8]) -> BTreeMap<Vec<u8>, NameFields> {
    let cstr = |b: &[u8]| b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())].to_vec();
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let (mut path, mut linkpath) = (None, None);
        for record in entry
            .pax_extensions()
            .expect("PAX records")
            .into_iter()
            .flatten()
        {
            let record = record.expect("a PAX record");
            match record.key_bytes() {
                b"path" => path = Some(record.value_bytes().to_vec()),
                b"linkpath" => linkpath = Some(record.value_bytes().to_vec()),
                _ => {}
            }
        }
        let header = entry.header().as_old();
        let fields = NameFields {
            name_field: cstr(&header.name),
            link_field: cstr(&header.linkname),
            path,
            linkpath,
        };
        let full = fields
            .path
            .clone()
            .unwrap_or_else(|| fields.name_field.clone());
        let full = full.strip_prefix(b"./").unwrap_or(&full);
        let full = full.strip_suffix(b"/").unwrap_or(full);
        out.insert(full.to_vec(), fields);
    }
    out
}

/// A layer as our export writes it (uncompressed).
fn export(layer: &Arc<dyn Layer>, below: &[Arc<dyn Layer>]) -> (Vec<u8>, LayerDigests) {
    export_layer(
        layer,
        below,
        Vec::new(),
        &ExportOptions::new().compression(Compression::None),
    )
    .expect("export the layer")
}

fn import(tar: &[u8], below: &[Arc<dyn Layer>]) -> Arc<dyn Layer> {
    let (layer, _) = import_layer(tar, below, &ImportOptions::default()).expect("import the layer");
    Arc::new(layer)
}

/// Our export writes the names of a tree as Go's `archive/tar` writes them
/// (a PAX `path`/`linkpath` record with the bytes, the ustar fields
/// without the bytes that are not ASCII), and a round trip import → export
/// keeps the bytes and the digest.
#[test]
fn export_writes_names_as_go_does_and_round_trips_byte_exact() {
    let test = "export_writes_names_as_go_does_and_round_trips_byte_exact";
    let Some(writer) = go_build("tar_writer", test) else {
        return;
    };
    let scratch = Scratch::new("names-export");
    let trees = [scratch.0.join("tree1"), scratch.0.join("tree2")];
    first_layer(trees[0].as_std_path());
    second_layer(trees[1].as_std_path());
    let mut below: Vec<Arc<dyn Layer>> = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        let go_tar = scratch.0.join(format!("go-{i}.tar"));
        run(Command::new(&writer)
            .arg(tree.as_std_path())
            .arg(go_tar.as_std_path()));
        let go_tar = fs::read(&go_tar).unwrap();
        let layer = import(&go_tar, &below);
        let (ours, digests) = export(&layer, &below);

        let go = name_fields(&go_tar);
        let mine = name_fields(&ours);
        assert_eq!(
            go.keys().map(|k| shown(k)).collect::<Vec<_>>(),
            mine.keys().map(|k| shown(k)).collect::<Vec<_>>(),
            "layer {i}: the same names"
        );
        let mut not_utf8 = 0;
        for (name, theirs) in &go {
            let fields = &mine[name];
            let link_not_utf8 = theirs
                .linkpath
                .as_ref()
                .is_some_and(|l| std::str::from_utf8(l).is_err());
            if std::str::from_utf8(name).is_err() || link_not_utf8 {
                not_utf8 += 1;
                assert_eq!(fields, theirs, "layer {i}: `{}`", shown(name));
            }
        }
        assert!(
            not_utf8 >= NAMES.len(),
            "layer {i}: {not_utf8} names not UTF-8"
        );

        // Import → export again: the same bytes, the same digests.
        let again = import(&ours, &below);
        let (twice, digests_twice) = export(&again, &below);
        assert!(ours == twice, "layer {i}: a round trip changed the tar");
        assert_eq!(digests, digests_twice, "layer {i}");
        below.insert(0, layer);
    }
}
