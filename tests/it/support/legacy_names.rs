//! A tree whose names are in Latin-1, KOI8-R, EUC-JP and CP866 (issue
//! 14), GNU tar to make layers of it, and trees on disk compared by their
//! bytes: shared by the library's tests (`tests/it/oci/names.rs`) and the
//! tool's (`cli/tests/it/cli/names.rs`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tools::{run, tool_runs};

/// Latin-1 `café`, KOI8-R `Привет`, EUC-JP `日本語`, CP866 `Привет`.
pub const NAMES: [&[u8]; 4] = [
    b"caf\xe9",
    b"\xf0\xd2\xc9\xd7\xc5\xd4",
    b"\xc6\xfc\xcb\xdc\xb8\xec",
    b"\x8f\xe0\xa8\xa2\xa5\xe2",
];

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A directory of 100 ASCII bytes, so that any path below it is past the
/// 100 bytes of a ustar name field.
pub fn long_dir() -> Vec<u8> {
    b"d".repeat(100)
}

/// The first layer: for each name N, a directory N holding a file N, a
/// symlink to it, a hard link to it, a file whose path is past 100 bytes
/// and a symlink whose target is; plus `gone/N` for the second layer to
/// delete.
pub fn first_layer(root: &Path) {
    fs::create_dir(root).unwrap();
    let long = root.join(os(&long_dir()));
    fs::create_dir(&long).unwrap();
    fs::create_dir(root.join("gone")).unwrap();
    for (i, name) in NAMES.iter().enumerate() {
        let dir = root.join(os(name));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let file = dir.join(os(name));
        fs::write(&file, cat(&[name, b"\n"])).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640 + i as u32)).unwrap();
        std::os::unix::fs::symlink(os(name), dir.join(os(&cat(&[name, b".link"])))).unwrap();
        fs::hard_link(&file, dir.join(os(&cat(&[name, b".hard"])))).unwrap();
        fs::write(long.join(os(name)), name).unwrap();
        let far = cat(&[b"/", &long_dir(), b"/", name]);
        std::os::unix::fs::symlink(os(&far), dir.join(os(&cat(&[name, b".far"])))).unwrap();
        fs::write(root.join("gone").join(os(name)), b"deleted above").unwrap();
    }
    // A directory and a file the second layer deletes whole.
    fs::write(root.join(os(NAMES[0])).join("kept"), b"kept").unwrap();
}

/// The second layer: whiteouts of `gone/N` for every name, of the whole
/// directory of the last name, and a new file in the first name's.
pub fn second_layer(root: &Path) {
    fs::create_dir(root).unwrap();
    fs::create_dir(root.join("gone")).unwrap();
    for name in NAMES {
        fs::write(root.join("gone").join(os(&cat(&[b".wh.", name]))), b"").unwrap();
    }
    let last = NAMES[NAMES.len() - 1];
    fs::write(root.join(os(&cat(&[b".wh.", last]))), b"").unwrap();
    fs::create_dir(root.join(os(NAMES[0]))).unwrap();
    fs::set_permissions(root.join(os(NAMES[0])), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(root.join(os(NAMES[0])).join(os(NAMES[2])), b"new").unwrap();
}

/// Whether GNU tar runs here; prints why not. With
/// `LAYERSTACK_REQUIRE_TOOLS` set (CI), a missing GNU tar fails the test.
pub fn have_gnu_tar(test: &str) -> bool {
    tool_runs(
        test,
        "GNU tar",
        "tar",
        Command::new("tar").arg("--version"),
        |out| out.starts_with(b"tar (GNU tar)"),
    )
}

/// GNU tar in the C locale, which keeps name bytes as they are.
pub fn gnu_tar() -> Command {
    let mut cmd = Command::new("tar");
    cmd.env("LC_ALL", "C");
    cmd
}

/// Tars the tree `dir` into `out` with GNU tar in `format`.
pub fn gnu_tar_create(dir: &Path, format: &str, out: &Path) {
    run(gnu_tar()
        .arg(format!("--format={format}"))
        .args(["--numeric-owner", "--sort=name", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg("."));
}

/// Extracts `tars` in order with GNU tar into `dir`, then applies the
/// whiteouts each layer holds (a `.wh.X` deletes `X` and itself), as a
/// container engine unpacking the layers would.
pub fn gnu_tar_unpack(tars: &[PathBuf], dir: &Path) {
    fs::create_dir(dir).unwrap();
    for tar in tars {
        let before = tree(dir);
        run(gnu_tar()
            .args(["--numeric-owner", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(dir));
        let after = tree(dir);
        for path in after.keys().filter(|p| !before.contains_key(*p)) {
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..=i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            if let Some(target) = name.strip_prefix(b".wh.") {
                let marker = dir.join(os(path));
                fs::remove_file(&marker).unwrap();
                let gone = dir.join(os(&cat(&[parent, target])));
                match fs::symlink_metadata(&gone) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&gone).unwrap(),
                    Ok(_) => fs::remove_file(&gone).unwrap(),
                    Err(_) => {}
                }
            }
        }
    }
}

/// One object of a tree, as compared.
#[derive(Debug, PartialEq, Eq)]
pub struct Object {
    pub kind: &'static str,
    pub mode: u32,
    pub owner: (u32, u32),
    /// A symlink's target bytes.
    pub target: Vec<u8>,
    pub data: Vec<u8>,
    /// Its inode number (0 for a directory).
    pub ino: u64,
}

/// Every object under `root` by its path bytes (relative, `/`-separated).
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Object> {
    let mut out = BTreeMap::new();
    walk(root, b"", &mut out);
    out
}

fn walk(dir: &Path, rel: &[u8], out: &mut BTreeMap<Vec<u8>, Object>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let path = if rel.is_empty() {
            name.as_bytes().to_vec()
        } else {
            cat(&[rel, b"/", name.as_bytes()])
        };
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let ft = meta.file_type();
        let (kind, target, data) = if ft.is_dir() {
            ("dir", Vec::new(), Vec::new())
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path()).unwrap();
            (
                "symlink",
                target.as_os_str().as_bytes().to_vec(),
                Vec::new(),
            )
        } else if ft.is_file() {
            let mut data = Vec::new();
            fs::File::open(entry.path())
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            ("file", Vec::new(), data)
        } else {
            ("other", Vec::new(), Vec::new())
        };
        out.insert(
            path.clone(),
            Object {
                kind,
                mode: meta.mode() & 0o7777,
                owner: (meta.uid(), meta.gid()),
                target,
                data,
                ino: if ft.is_dir() { 0 } else { meta.ino() },
            },
        );
        if ft.is_dir() {
            walk(&entry.path(), &path, out);
        }
    }
}

/// A tree with inode numbers replaced by the first path of each inode, so
/// that two trees compare by which names share an inode.
pub fn comparable(tree: BTreeMap<Vec<u8>, Object>) -> BTreeMap<Vec<u8>, (Object, Vec<u8>)> {
    let mut first: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (path, object) in &tree {
        if object.ino != 0 {
            first.entry(object.ino).or_insert_with(|| path.clone());
        }
    }
    tree.into_iter()
        .map(|(path, mut object)| {
            let group = first.get(&object.ino).cloned().unwrap_or_default();
            object.ino = 0;
            (path, (object, group))
        })
        .collect()
}

/// A name for a message: printable ASCII as it is, the rest escaped.
pub fn shown(path: &[u8]) -> String {
    path.escape_ascii().to_string()
}
