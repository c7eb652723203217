//! `RUN` through the real kernel overlayfs (`oci::build::run_step`): a
//! command over two layers of a tiny root filesystem (Debian's static
//! busybox), its namespaces, environment and output, and the changes it
//! leaves in the upper, in the kernel's format. Needs root and overlayfs
//! (else `SKIP`, unless `LAYERSTACK_REQUIRE_KERNEL=1`) and `/bin/busybox`
//! from busybox-static (else `SKIP`, unless `LAYERSTACK_REQUIRE_TOOLS`).

use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};

use camino::Utf8PathBuf;
use layerstack::oci::build::{RunStep, run_step};
use layerstack::oci::{BuildOptions, ImageStore, OciLayout};

use crate::support::harness::kernel_available;
use crate::support::tools::{BUSYBOX, Scratch, busybox, dir_tree, view_tree};

/// Two layers (top first) of a root filesystem with a shell, and empty
/// upper, work and root directories.
fn image(scratch: &Scratch) -> RunStep {
    let layers = scratch.path("layers");
    let bottom = layers.join("0");
    let top = layers.join("1");
    for dir in ["bin", "etc", "srv"] {
        std::fs::create_dir_all(bottom.join(dir)).unwrap();
    }
    std::fs::copy(BUSYBOX, bottom.join("bin/busybox")).unwrap();
    symlink("busybox", bottom.join("bin/sh")).unwrap();
    std::fs::write(bottom.join("etc/gone"), "old\n").unwrap();
    std::fs::write(bottom.join("etc/keep"), "kept\n").unwrap();
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/added"), "new\n").unwrap();
    for dir in ["upper", "work", "root"] {
        std::fs::create_dir(scratch.path(dir)).unwrap();
    }
    RunStep {
        lowers: vec![top, bottom],
        upper: scratch.path("upper"),
        work: scratch.path("work"),
        root: scratch.path("root"),
        argv: Vec::new(),
        env: vec![("PATH".into(), "/bin".into()), ("FOO".into(), "a b".into())],
        uid: 0,
        gid: 0,
        workdir: "/srv".into(),
    }
}

/// The upper's tree: (path, what).
fn tree(root: &Utf8PathBuf) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = Utf8PathBuf::from_path_buf(entry.path()).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
                "whiteout".to_owned()
            } else {
                format!("file {:?}", std::fs::read_to_string(&path).unwrap())
            };
            out.push((path.strip_prefix(root).unwrap().to_string(), what));
        }
    }
    out.sort();
    out
}

fn mounted(path: &Utf8PathBuf) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_str()))
}

#[test]
fn run_changes_the_upper_in_namespaces_of_its_own() {
    let test = "run_changes_the_upper_in_namespaces_of_its_own";
    if !kernel_available() || !busybox(test) {
        return;
    }
    let scratch = Scratch::new("run");
    let mut step = image(&scratch);
    step.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        concat!(
            "echo pid=$$ uid=$(id -u) gid=$(id -g) pwd=$(pwd) foo=\"$FOO\" home=${HOME-unset}; ",
            "rm /etc/gone; mkdir /new; echo hi > /new/f; echo x > /dev/null; ",
            "ls /dev | tr '\\n' ' '; echo; ",
            "echo interfaces=$(tail -n +3 /proc/net/dev | wc -l); ",
            "cat /etc/keep /etc/added; echo to-stderr >&2"
        )
        .into(),
    ];
    let mut streamed = Vec::new();
    let outcome = run_step(&step, &mut |line| streamed.extend_from_slice(line)).unwrap();
    let expected = [
        "pid=1 uid=0 gid=0 pwd=/srv foo=a b home=unset",
        "fd full null random stderr stdin stdout tty urandom zero ",
        "interfaces=1",
        "kept",
        "new",
        "to-stderr",
    ];
    assert_eq!(outcome.status, 0, "{:?}", outcome.tail);
    assert_eq!(outcome.tail, expected);
    assert_eq!(
        String::from_utf8(streamed).unwrap(),
        expected.join("\n") + "\n"
    );
    // The changes, in the kernel's format; no `/proc` or `/dev`.
    assert_eq!(
        tree(&step.upper),
        [
            ("etc".to_owned(), "dir".to_owned()),
            ("etc/gone".to_owned(), "whiteout".to_owned()),
            ("new".to_owned(), "dir".to_owned()),
            ("new/f".to_owned(), "file \"hi\\n\"".to_owned()),
        ]
    );
    assert!(!mounted(&step.root), "the overlay is not left mounted");
}

#[test]
fn a_failing_run_gives_its_status_and_last_lines() {
    let test = "a_failing_run_gives_its_status_and_last_lines";
    if !kernel_available() || !busybox(test) {
        return;
    }
    let scratch = Scratch::new("run-fail");
    let mut step = image(&scratch);
    step.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "for i in $(seq 1 30); do echo line $i; done; echo failing >&2; exit 3".into(),
    ];
    let outcome = run_step(&step, &mut |_| {}).unwrap();
    assert_eq!(outcome.status, 3);
    assert!(!outcome.success());
    let mut expected: Vec<String> = (12..=30).map(|i| format!("line {i}")).collect();
    expected.push("failing".into());
    assert_eq!(outcome.tail, expected);
    // A user without rights, in another working directory.
    step.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "id -u; id -g; pwd; rm /etc/keep".into(),
    ];
    step.uid = 1000;
    step.gid = 1001;
    step.workdir = "/etc".into();
    let scratch2 = Scratch::new("run-user");
    step.upper = scratch2.path("upper");
    step.work = scratch2.path("work");
    for dir in [&step.upper, &step.work] {
        std::fs::create_dir(dir).unwrap();
    }
    let outcome = run_step(&step, &mut |_| {}).unwrap();
    assert_eq!(outcome.status, 1);
    assert_eq!(
        outcome.tail,
        [
            "1000",
            "1001",
            "/etc",
            "rm: can't remove '/etc/keep': Permission denied"
        ]
    );
    assert!(tree(&step.upper).is_empty());
    // A missing layer: the mount fails, an error that says so.
    step.lowers.push(scratch.path("layers/missing"));
    let err = run_step(&step, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("the overlay mount of the image failed"),
        "{err}"
    );
}

/// An image's layers as directories in the kernel's format: the kernel
/// mounts them and shows what the image's view shows, a second call
/// reuses them, and a `RUN` runs over them.
#[test]
fn layer_dirs_mount_as_the_image_shows_and_run_over_them() {
    let test = "layer_dirs_mount_as_the_image_shows_and_run_over_them";
    if !kernel_available() || !busybox(test) {
        return;
    }
    let scratch = Scratch::new("layer-dirs");
    let store = ImageStore::new(OciLayout::create(scratch.path("layout")).unwrap());
    let mut build = store.builder(None, BuildOptions::default()).unwrap();
    let shell = std::fs::read(BUSYBOX).unwrap();
    build
        .step("base", |fs| {
            fs.create_dir_all("bin")?;
            fs.write("bin/busybox", &shell)?;
            fs.set_permissions("bin/busybox", 0o755)?;
            fs.symlink("busybox", "bin/sh")?;
            fs.create_dir_all("etc")?;
            fs.write("etc/a", "1\n")?;
            fs.write("etc/b", "2\n")?;
            fs.hard_link("etc/b", "etc/b2")?;
            fs.create_dir_all("d/sub")?;
            fs.write("d/sub/x", "x\n")?;
            fs.write(b"caf\xe9", "latin-1\n")
        })
        .unwrap();
    build
        .step("change", |fs| {
            fs.remove_file("etc/a")?;
            fs.remove_dir_all("d")?;
            fs.create_dir("d")?;
            fs.write("d/y", "y\n")?;
            fs.set_permissions("etc/b", 0o600)
        })
        .unwrap();
    let image = build.finish("t").unwrap();
    let dirs = store.layer_dirs(&image).unwrap();
    let chain = image.chain_ids();
    let root = scratch.path("layout/.layerstack/dirs");
    assert_eq!(dirs, [root.join(chain[1].hex()), root.join(chain[0].hex())]);
    let made = std::fs::metadata(&dirs[0]).unwrap().ino();
    assert_eq!(store.layer_dirs(&image).unwrap(), dirs);
    assert_eq!(std::fs::metadata(&dirs[0]).unwrap().ino(), made);
    // The kernel's read-only mount of the two shows the image.
    let mnt = scratch.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lowerdir = format!("lowerdir={}:{}", dirs[0], dirs[1]);
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lowerdir])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount the layer directories");
    let mounted = dir_tree(mnt.as_std_path());
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(mounted, view_tree(&store.container(&image).unwrap()));
    // A RUN over them.
    for dir in ["upper", "work", "root"] {
        std::fs::create_dir(scratch.path(dir)).unwrap();
    }
    let step = RunStep {
        lowers: dirs,
        upper: scratch.path("upper"),
        work: scratch.path("work"),
        root: scratch.path("root"),
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat /etc/b; ls /d /etc; test -e /etc/a || echo no-a".into(),
        ],
        env: vec![("PATH".into(), "/bin".into())],
        uid: 0,
        gid: 0,
        workdir: "/".into(),
    };
    let outcome = run_step(&step, &mut |_| {}).unwrap();
    assert_eq!(
        (outcome.status, outcome.tail),
        (
            0,
            vec![
                "2".into(),
                "/d:".into(),
                "y".into(),
                "".into(),
                "/etc:".into(),
                "b".into(),
                "b2".into(),
                "no-a".into()
            ]
        )
    );
}
