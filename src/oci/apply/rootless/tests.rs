use super::*;

const SOURCE: &str = "work/rootfs.layerstack-rootless.json";

/// A map with one kept object (`/etc/app.conf`, inode 40) and one absent
/// device (`/dev/null`, in the directory of inode 30).
const SAMPLE: &str = r#"{
  "layerstack-rootless": 1,
  "image": "sha256:00",
  "user": {"uid": 1001, "gid": 1002},
  "root": {"ino": 2, "btime": [1700000000, 1]},
  "objects": [
    {"path": "/etc/app.conf", "ino": 40, "btime": [1700000000, 4], "uid": 1000, "gid": 1000,
     "mode": "4755", "unpacked": {"uid": 1001, "gid": 1002, "mode": "0755"},
     "xattrs": {"trusted.note": "6b657074"}}
  ],
  "absent": [
    {"path": "/dev/null", "parent": {"ino": 30, "btime": null}, "type": "char", "mode": "0666",
     "uid": 0, "gid": 0, "rdev": [1, 3], "mtime": [1700000000, 0], "link": 7}
  ]
}"#;

fn sample() -> RootlessMap {
    RootlessMap::from_json(SAMPLE.as_bytes(), Utf8Path::new(SOURCE)).unwrap()
}

fn id(ino: u64, nsec: u32) -> Identity {
    Identity {
        ino,
        btime: Some(Timestamp::new(1_700_000_000, nsec)),
    }
}

fn disk(uid: u32, gid: u32, mode: u32) -> Metadata {
    Metadata::new(FileType::File)
        .with_owner(uid, gid)
        .with_mode(mode)
}

fn path(p: &str) -> LayerPath {
    LayerPath::new(p).unwrap()
}

#[test]
fn the_json_round_trips() {
    let map = sample();
    assert_eq!((map.user(), map.kept(), map.absent()), ((1001, 1002), 1, 1));
    assert_eq!(map.image(), Some("sha256:00"));
    let again = RootlessMap::from_json(map.to_json().as_bytes(), Utf8Path::new(SOURCE)).unwrap();
    assert_eq!(again, map);
}

#[test]
fn the_map_lives_beside_the_tree() {
    assert_eq!(
        metadata_path(Utf8Path::new("work/rootfs")).unwrap(),
        "work/rootfs.layerstack-rootless.json"
    );
    assert_eq!(
        metadata_path(Utf8Path::new("work/rootfs/")).unwrap(),
        "work/rootfs.layerstack-rootless.json"
    );
    assert_eq!(
        metadata_path(Utf8Path::new("rootfs")).unwrap(),
        "rootfs.layerstack-rootless.json"
    );
    let root = metadata_path(Utf8Path::new("/")).unwrap_err();
    assert_eq!(root.kind(), ErrorKind::InvalidInput);
}

#[test]
fn an_object_unchanged_since_the_unpack_gets_the_image_s_attributes_back() {
    let map = sample();
    let got = map.map_back(&path("etc/app.conf"), &disk(1001, 1002, 0o755), id(40, 4));
    assert_eq!((got.uid, got.gid, got.mode), (1000, 1000, 0o4755));
    assert_eq!(got.xattrs.get("trusted.note").unwrap().as_ref(), b"kept");
}

#[test]
fn what_the_user_changed_wins_over_the_map() {
    let map = sample();
    // chmod-ed: the user's mode; the owner is still the image's.
    let got = map.map_back(&path("etc/app.conf"), &disk(1001, 1002, 0o600), id(40, 4));
    assert_eq!((got.uid, got.gid, got.mode), (1000, 1000, 0o600));
    // An attribute of that name on disk is the user's.
    let mut mine = disk(1001, 1002, 0o755);
    mine.xattrs.insert("trusted.note", &b"mine"[..]);
    let got = map.map_back(&path("etc/app.conf"), &mine, id(40, 4));
    assert_eq!(got.xattrs.get("trusted.note").unwrap().as_ref(), b"mine");
    // chown-ed (by root) to someone else: theirs.
    let got = map.map_back(&path("etc/app.conf"), &disk(5, 1002, 0o755), id(40, 4));
    assert_eq!((got.uid, got.gid, got.mode), (5, 0, 0o4755));
}

#[test]
fn a_replaced_object_is_the_user_s_and_so_root_s() {
    let map = sample();
    for other in [
        id(41, 4),
        id(40, 5),
        Identity {
            ino: 40,
            btime: None,
        },
    ] {
        let got = map.map_back(&path("etc/app.conf"), &disk(1001, 1002, 0o755), other);
        assert_eq!((got.uid, got.gid, got.mode), (0, 0, 0o755));
        assert!(got.xattrs.is_empty());
    }
    // Not the unpacking user's: as it is.
    let got = map.map_back(&path("etc/other"), &disk(7, 1002, 0o644), id(50, 0));
    assert_eq!((got.uid, got.gid), (7, 0));
}

#[test]
fn a_skipped_device_belongs_to_the_directory_the_unpack_made() {
    let map = sample();
    let made = Identity {
        ino: 30,
        btime: None,
    };
    let found: Vec<_> = map.absent_in(&path("dev"), made).collect();
    assert_eq!(found.len(), 1);
    let (name, meta, link) = found[0];
    assert_eq!((name.as_bytes(), link), (b"null".as_slice(), Some(7)));
    assert_eq!(
        (meta.file_type, meta.rdev, meta.mode),
        (FileType::CharDevice, makedev(1, 3), 0o666)
    );
    assert_eq!(map.absent_in(&path("dev"), id(30, 0)).count(), 0);
    assert_eq!(map.absent_in(&path("etc"), made).count(), 0);
}

#[test]
fn a_map_of_another_tree_is_refused() {
    let map = sample();
    map.check_root(id(2, 1), Utf8Path::new("work/rootfs"))
        .unwrap();
    let e = map
        .check_root(id(3, 1), Utf8Path::new("work/rootfs"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        format!(
            "failed to commit `work/rootfs`: `{SOURCE}` was recorded for another tree (its root is another directory): remove it to commit the tree as it is, owners and all"
        )
    );
}

/// `SAMPLE` with `from` replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    assert!(SAMPLE.contains(from), "{from}");
    SAMPLE.replacen(from, to, 1)
}

#[test]
fn hostile_maps_are_refused_with_one_line_naming_the_file_and_the_entry() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "EOF while parsing"),
        ("{".into(), "EOF while parsing"),
        ("[]".into(), "the top level must be an object"),
        (deep, "recursion limit exceeded"),
        (
            edited(r#""layerstack-rootless": 1"#, r#""layerstack-rootless": 2"#),
            "version 2, and this layerstack reads version 1",
        ),
        (
            edited(r#""layerstack-rootless": 1,"#, ""),
            "`layerstack-rootless` is missing",
        ),
        (
            edited(r#""image""#, r#""extra": 1, "image""#),
            "unknown field \"extra\"",
        ),
        (
            edited("/etc/app.conf", "/../etc/passwd"),
            "path \"/../etc/passwd\" is not valid",
        ),
        (
            edited("/etc/app.conf", "etc/app.conf"),
            "path \"etc/app.conf\" is not absolute",
        ),
        (edited("/etc/app.conf", "/etc//app.conf"), "is not valid"),
        (
            edited("/etc/app.conf", "/etc/\\u001b[31m/.."),
            "path \"/etc/\\u{1b}[31m/..\" is not valid",
        ),
        (
            edited("/etc/app.conf", "/etc/.wh.app.conf"),
            "has a name starting with `.wh.`",
        ),
        (
            edited(
                r#""uid": 1000, "gid": 1000"#,
                r#""uid": 4294967296, "gid": 1000"#,
            ),
            "`uid` is out of range (4294967296)",
        ),
        (
            edited(r#""uid": 1000, "gid": 1000"#, r#""uid": -1, "gid": 1000"#),
            "`uid` must be a whole number",
        ),
        (
            edited(r#""mode": "4755""#, r#""mode": "17777""#),
            "must be an octal mode of at most 4 digits",
        ),
        (
            edited(r#""mode": "4755""#, r#""mode": "0x1ff""#),
            "must be an octal mode of at most 4 digits",
        ),
        (
            edited("[1700000000, 4]", "[1700000000, 1000000000]"),
            "`btime` must be [seconds, nanoseconds] or null",
        ),
        (
            edited("trusted.note", "trusted.overlay.opaque"),
            "extended attribute \"trusted.overlay.opaque\" is not one a layer keeps",
        ),
        (
            edited("trusted.note", "system.posix_acl_access"),
            "is not one a layer keeps",
        ),
        (
            edited("6b657074", "6b6"),
            "the value of \"trusted.note\" must be hex",
        ),
        (edited("6b657074", "zz"), "must be hex"),
        // `from_str_radix` alone reads "+b" as 0x0b.
        (edited("6b657074", "+b+e"), "must be hex"),
        (
            edited(r#""type": "char""#, r#""type": "file""#),
            "type \"file\" is not one an unpack skips",
        ),
        (
            edited("[1, 3]", "[0, 0]"),
            "a character device 0:0 is a whiteout",
        ),
        (edited("[1, 3]", "[1]"), "`rdev` must be [major, minor]"),
        (edited("/dev/null", "/"), "the root cannot be absent"),
        (
            edited("/dev/null", "/etc/app.conf"),
            "`/etc/app.conf` is listed twice",
        ),
        (
            edited(r#""objects": ["#, r#""objects": "none", "unused": ["#),
            "`objects` must be an array",
        ),
    ];
    for (text, want) in cases {
        let e = RootlessMap::from_json(text.as_bytes(), Utf8Path::new(SOURCE)).unwrap_err();
        let message = e.to_string();
        assert_eq!(e.kind(), ErrorKind::InvalidData, "{message}");
        assert!(
            message.starts_with(&format!("failed to read `{SOURCE}`: not a rootless map: ")),
            "{message}"
        );
        assert!(message.contains(want), "want {want:?} in: {message}");
        assert!(
            !message.chars().any(char::is_control),
            "control characters in: {message:?}"
        );
    }
}
