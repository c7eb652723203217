//! Names that are not UTF-8 (issue 14) through the tool: an image whose
//! two layers GNU tar made from trees named in Latin-1, KOI8-R, EUC-JP and
//! CP866 goes through `ls`, `cat`, `diff`, `unpack` and `commit`. Text
//! output escapes each byte that is not UTF-8 (`\ooo`), JSON gives the
//! bytes whole, and paths come in on the command line as bytes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::sync::Arc;

use camino::Utf8PathBuf;
use layerstack::oci::{BuildOptions, ImageStore, ImportOptions, OciLayout, import_layer};
use layerstack::{Layer, MemLayer};
use serde_json::{Value, json};

use super::{image, short, thousands};
use crate::legacy_names::{
    NAMES, cat, comparable, first_layer, gnu_tar_create, gnu_tar_unpack, have_gnu_tar,
    second_layer, tree,
};
use crate::tools::{Scratch, root};

/// The tool's exit code, stdout (bytes: `cat` prints a file as it is) and
/// stderr, for arguments that are bytes.
fn raw(args: &[&[u8]]) -> (i32, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_layerstack"))
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run layerstack");
    (
        out.status.code().expect("an exit code"),
        out.stdout,
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

/// Runs the tool, which must succeed silently on stderr; its stdout, which
/// must be UTF-8 (no name's raw bytes reach a terminal).
fn text(args: &[&[u8]]) -> String {
    let (code, stdout, stderr) = raw(args);
    assert_eq!((code, stderr.as_str()), (0, ""), "layerstack {args:?}");
    String::from_utf8(stdout).expect("UTF-8 stdout")
}

/// `/` and the escaped path, as the tool prints a path (the escaping's
/// exact strings are the library's unit tests).
fn printed(path: &[u8]) -> String {
    format!("/{}", layerstack::escape_name(path))
}

/// The image `names` in a layout: the two layers GNU tar made (posix
/// format), imported; and the two GNU tar layers.
fn legacy_image(s: &Scratch) -> (Utf8PathBuf, [std::path::PathBuf; 2]) {
    let trees = [s.path("tree1"), s.path("tree2")];
    first_layer(trees[0].as_std_path());
    second_layer(trees[1].as_std_path());
    let tars = [s.path("1.tar"), s.path("2.tar")].map(Utf8PathBuf::into_std_path_buf);
    let dir = s.path("layout");
    let store = ImageStore::new(OciLayout::create(&dir).unwrap());
    let mut b = store.builder(None, BuildOptions::new()).unwrap();
    let mut below: Vec<Arc<dyn Layer>> = Vec::new();
    for (i, (tree, tar)) in trees.iter().zip(&tars).enumerate() {
        gnu_tar_create(tree.as_std_path(), "posix", tar);
        let (layer, _): (MemLayer, _) = import_layer(
            fs::File::open(tar).unwrap(),
            &below,
            &ImportOptions::default(),
        )
        .expect("import the GNU tar layer");
        below.insert(0, Arc::new(layer.clone()));
        b.add_layer_from(layer, &format!("tree{}", i + 1)).unwrap();
    }
    b.finish("names").unwrap();
    (dir, tars)
}

#[test]
fn names_that_are_not_utf8_go_through_ls_cat_diff_unpack_and_commit() {
    let test = "names_that_are_not_utf8_go_through_ls_cat_diff_unpack_and_commit";
    if !have_gnu_tar(test) || !root(test) {
        return;
    }
    let s = Scratch::new("cli-names");
    let (dir, tars) = legacy_image(&s);
    let at = format!("{dir}:names");
    let at = at.as_bytes();
    let img = image(&dir, "names");
    let [latin1, koi8r, eucjp, cp866] = NAMES;
    let file = cat(&[latin1, b"/", latin1]);

    // ls: every path the image shows, escaped; the file's line whole.
    let want = tree(&{
        let want = s.path("want").into_std_path_buf();
        gnu_tar_unpack(&tars, &want);
        want
    });
    let ls = text(&[b"ls", at, b"-R"]);
    let listed: Vec<&str> = ls
        .lines()
        .skip(1)
        .map(|l| {
            l.split("  /")
                .nth(1)
                .map_or(l, |p| p.split(" -> ").next().unwrap())
        })
        .collect();
    let mut expected: Vec<String> = want.keys().map(|p| printed(p)[1..].to_owned()).collect();
    let mut got: Vec<String> = listed.iter().map(|p| (*p).to_owned()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{ls}");
    let line = ls
        .lines()
        .find(|l| l.ends_with(&format!("  {}", printed(&file))))
        .unwrap_or_else(|| panic!("no line for {}: {ls}", printed(&file)));
    assert_eq!(
        line.split_whitespace().take(4).collect::<Vec<_>>(),
        ["-rw-r-----", "0:0", "5", "0"],
        "{line}"
    );
    assert!(ls.contains(&format!(
        "  {} -> {}\n",
        printed(&cat(&[latin1, b"/", latin1, b".link"])),
        &printed(latin1)[1..]
    )));

    // ls --json: the exact bytes beside the escaped text.
    let json: Value = serde_json::from_str(&text(&[b"ls", at, b"-R", b"--json"])).unwrap();
    let entry = |path: &[u8]| {
        let shown = printed(path);
        json.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == shown.as_str())
            .unwrap_or_else(|| panic!("no entry {shown}"))
            .clone()
    };
    let mut rooted = b"/".to_vec();
    rooted.extend_from_slice(&file);
    let e = entry(&file);
    assert_eq!(e["path_bytes"], json!(rooted));
    assert_eq!(
        (e["type"].clone(), e["size"].clone()),
        (json!("file"), json!(5))
    );
    let link = entry(&cat(&[latin1, b"/", latin1, b".link"]));
    assert_eq!(link["target"], json!(&printed(latin1)[1..]));
    assert_eq!(link["target_bytes"], json!(latin1));
    // A UTF-8 name's document is as it always was: no `_bytes` fields.
    let gone = entry(b"gone");
    assert!(gone.get("path_bytes").is_none(), "{gone}");

    // ls and cat take a path of bytes.
    let mut rooted_dir = b"/".to_vec();
    rooted_dir.extend_from_slice(koi8r);
    let koi8_dir = text(&[b"ls", at, &rooted_dir]);
    assert_eq!(koi8_dir.lines().count(), 5, "{koi8_dir}");
    let (code, stdout, stderr) = raw(&[b"cat", at, &rooted]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, cat(&[latin1, b"\n"]));
    let (_, through_link, _) = raw(&[b"cat", at, &cat(&[b"/", latin1, b"/", latin1, b".link"])]);
    assert_eq!(through_link, cat(&[latin1, b"\n"]));

    // diff: the second layer's changes, escaped; a path of bytes filters.
    let l1 = short(&img, 1);
    let deleted_gone: String = NAMES
        .iter()
        .map(|n| format!("  D {}\n", printed(&cat(&[b"gone/", n]))))
        .collect();
    let mut sorted_gone: Vec<&str> = deleted_gone.lines().collect();
    sorted_gone.sort_by_key(|l| l.len());
    let layer1 = text(&[b"diff", at, b"--layer", b"1"]);
    assert!(
        layer1.starts_with(&format!("layer 1 {l1}  tree2\n")),
        "{layer1}"
    );
    for line in deleted_gone.lines() {
        assert!(layer1.contains(&format!("{line}\n")), "{line} in {layer1}");
    }
    assert!(
        layer1.contains(&format!("  D {}\n", printed(cp866))),
        "{layer1}"
    );
    assert!(
        layer1.contains(&format!("  A {}\n", printed(&cat(&[latin1, b"/", eucjp])))),
        "{layer1}"
    );
    let mut under = b"/".to_vec();
    under.extend_from_slice(latin1);
    assert_eq!(
        text(&[b"diff", at, &under, b"--layer", b"1"]),
        format!(
            "layer 1 {l1}  tree2\n  C {}\n  A {}\n",
            printed(latin1),
            printed(&cat(&[latin1, b"/", eucjp]))
        )
    );
    let diff_json: Value =
        serde_json::from_str(&text(&[b"diff", at, &under, b"--layer", b"1", b"--json"])).unwrap();
    let mut added = b"/".to_vec();
    added.extend_from_slice(&cat(&[latin1, b"/", eucjp]));
    assert_eq!(
        diff_json[0]["changes"][1],
        json!({"kind": "added", "path": printed(&cat(&[latin1, b"/", eucjp])), "path_bytes": added})
    );

    // unpack: GNU tar's tree, byte for byte.
    let rootfs = s.path("rootfs");
    text(&[b"unpack", at, rootfs.as_str().as_bytes()]);
    assert!(
        comparable(tree(rootfs.as_std_path())) == comparable(want),
        "unpack differs from GNU tar's extraction"
    );

    // commit: an edited file and a new name, as changes of one layer.
    fs::write(
        rootfs.as_std_path().join(OsStr::from_bytes(&file)),
        b"edited\n",
    )
    .unwrap();
    let new = cat(&[latin1, b"/", koi8r, b".new"]);
    fs::write(rootfs.as_std_path().join(OsStr::from_bytes(&new)), b"new\n").unwrap();
    let (code, stdout, stderr) = raw(&[
        b"commit",
        at,
        rootfs.as_str().as_bytes(),
        b"--tag",
        b"edited",
    ]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let edited = image(&dir, "edited");
    let l2 = short(&edited, 2);
    let changes = format!(
        "  C {}\n  C {}\n  C {}\n  A {}\n",
        printed(latin1),
        printed(&file),
        printed(&cat(&[&file, b".hard"])),
        printed(&new)
    );
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        format!(
            "{dir}:edited: layer 2 {l2} ({} bytes) on {dir}:names\n{changes}",
            thousands(edited.layers()[2].size)
        )
    );
    let edited_at = format!("{dir}:edited");
    assert_eq!(
        text(&[b"diff", edited_at.as_bytes(), b"--layer", b"2"]),
        format!("layer 2 {l2}  layerstack commit\n{changes}")
    );
    let again = s.path("again");
    text(&[b"unpack", edited_at.as_bytes(), again.as_str().as_bytes()]);
    assert!(
        comparable(tree(again.as_std_path())) == comparable(tree(rootfs.as_std_path())),
        "the committed image unpacks to another tree"
    );
}
