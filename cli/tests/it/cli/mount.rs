//! `layerstack mount` end to end, through the built tool and real system
//! calls: the overlay form over layers in the kernel's format, with the
//! kernel's overlayfs as the judge (what a FUSE session writes, the kernel
//! mounts, and the reverse); the mount helper forms (mount(8) with
//! `-t fuse.layerstack`); images read-only and with an upper layer; the
//! background process (it returns once mounted, `umount` ends it, SIGTERM
//! unmounts); and the one-line errors.
//!
//! Mounting needs root and `/dev/fuse` (the kernel's overlayfs for the
//! round trips): without them a test prints `SKIP <test>: <reason>` and
//! passes, unless `LAYERSTACK_REQUIRE_ROOT` (`LAYERSTACK_REQUIRE_KERNEL`)
//! is set.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{Pid, Signal};

use super::{demo, fails, layerstack, ok};
use crate::tools::{Scratch, Tree, difference, dir_tree, root, run};

/// Whether FUSE mounts can be made here (root and `/dev/fuse`); prints why
/// not.
fn fuse(test: &str) -> bool {
    if !root(test) {
        return false;
    }
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_KERNEL").is_none(),
            "{test} needs /dev/fuse and LAYERSTACK_REQUIRE_KERNEL is set"
        );
        eprintln!("SKIP {test}: no /dev/fuse (modprobe fuse)");
    }
    ok
}

/// Whether the kernel's overlayfs mounts here too; prints why not.
fn kernel_overlay(test: &str, s: &Scratch) -> bool {
    let dirs = ["probe-l", "probe-u", "probe-w", "probe-m"].map(|d| s.path(d));
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs[0], dirs[1], dirs[2]
    );
    let ok = match kernel_mount(dirs[3].as_std_path(), &data) {
        Ok(()) => {
            unmount(dirs[3].as_std_path());
            true
        }
        Err(e) => {
            assert!(
                std::env::var_os("LAYERSTACK_REQUIRE_KERNEL").is_none(),
                "{test} needs the kernel's overlayfs and LAYERSTACK_REQUIRE_KERNEL is set: {e}"
            );
            eprintln!("SKIP {test}: the kernel's overlayfs does not mount here: {e}");
            false
        }
    };
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    ok
}

fn kernel_mount(mnt: &Path, data: &str) -> rustix::io::Result<()> {
    let data = CString::new(data).expect("no NUL");
    rustix::mount::mount("overlay", mnt, "overlay", MountFlags::empty(), &*data)
}

/// Unmounts `mnt`. `EBUSY` is tried again for a second: another test's
/// child, between its fork and its exec, holds for an instant copies of
/// every descriptor this process has open, such as a directory of `mnt`
/// being listed.
fn unmount(mnt: &Path) {
    let mut tries = 0;
    loop {
        match rustix::mount::unmount(mnt, UnmountFlags::empty()) {
            Err(rustix::io::Errno::BUSY) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap_or_else(|e| panic!("umount {}: {e}", mnt.display())),
        }
    }
}

/// The filesystem type mounted at `mnt`, from /proc/self/mountinfo
/// (`None`: nothing is mounted there).
fn mounted_type(mnt: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_str().unwrap();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields[4] == mnt).then(|| fields[dash + 1].to_owned())
    })
}

/// Our FUSE mount is at `mnt`: type `fuse.layerstack`.
fn assert_fuse(mnt: &Path) {
    let t = mounted_type(mnt);
    assert_eq!(
        t.as_deref(),
        Some("fuse.layerstack"),
        "at {}",
        mnt.display()
    );
}

/// The source mounted at `mnt`, as the mount table shows it.
fn mounted_source(mnt: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_str().unwrap();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields[4] == mnt).then(|| fields[dash + 2].to_owned())
    })
}

/// Unmounts whatever is still mounted at its path when dropped (a failed
/// test leaves no mount behind).
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        while mounted_type(&self.0).is_some() {
            if rustix::mount::unmount(&self.0, UnmountFlags::DETACH).is_err() {
                break;
            }
        }
    }
}

/// Polls `done` every 10 ms for up to 20 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `layerstack mount ARGS` in the background mode: it must succeed
/// silently, with the mount there when it returns.
fn mount(args: &[&str], mnt: &Path) -> Guard {
    let mut all = vec!["mount"];
    all.extend_from_slice(args);
    assert_eq!(ok(&all), "");
    assert_fuse(mnt);
    Guard(mnt.to_owned())
}

/// Sets a `trusted.*` xattr (the overlay's own need root).
fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// A whiteout as the kernel writes it: a character device 0/0.
fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

fn is_whiteout(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Two lower layers in the kernel's format, in directories whose names
/// need the escapes of `lowerdir=` (a colon, a comma): the top one whites
/// out `etc/motd`, hides `srv/` below it (opaque), and replaces
/// `etc/app.conf`.
struct Layers {
    top: Utf8PathBuf,
    bottom: Utf8PathBuf,
}

impl Layers {
    fn new(s: &Scratch) -> Layers {
        let top = s.path("layer:top");
        let bottom = s.path("layer,bottom");
        let w = |p: &Utf8PathBuf, rel: &str, data: &str| {
            let path = p.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        };
        w(&bottom, "etc/app.conf", "port = 80\n");
        w(&bottom, "etc/motd", "hello\n");
        w(&bottom, "srv/www/old.html", "old\n");
        w(&bottom, "usr/bin/hello", "#!/bin/sh\necho hello\n");
        std::os::unix::fs::symlink("hello", bottom.join("usr/bin/hi")).unwrap();
        std::fs::hard_link(bottom.join("usr/bin/hello"), bottom.join("usr/bin/hello2")).unwrap();
        w(&top, "etc/app.conf", "port = 8080\n");
        whiteout(top.join("etc/motd").as_std_path());
        w(&top, "srv/www/index.html", "<h1>new</h1>\n");
        set_xattr(
            top.join("srv").as_std_path(),
            "trusted.overlay.opaque",
            b"y",
        );
        set_xattr(top.join("etc/app.conf").as_std_path(), "user.note", b"top");
        Layers { top, bottom }
    }

    /// The `lowerdir=` value, escaped as the kernel reads it.
    fn lowerdir(&self) -> String {
        let escape = |p: &Utf8PathBuf| p.as_str().replace(':', "\\:").replace(',', "\\,");
        format!("{}:{}", escape(&self.top), escape(&self.bottom))
    }
}

/// The same changes, through ordinary system calls, on whichever mount
/// `root` is: a copy-up, a new file and directory, a deletion of a lower
/// file (a whiteout), a directory deleted and made again (opaque), a
/// rename, a hard link, and an xattr.
fn change(root: &Path) {
    std::fs::write(root.join("etc/app.conf"), "port = 9090\n").unwrap();
    std::fs::create_dir(root.join("var")).unwrap();
    std::fs::write(root.join("var/log"), "started\n").unwrap();
    std::fs::remove_file(root.join("usr/bin/hi")).unwrap();
    std::fs::remove_dir_all(root.join("srv/www")).unwrap();
    std::fs::create_dir(root.join("srv/www")).unwrap();
    std::fs::write(root.join("srv/www/index.html"), "<h1>v3</h1>\n").unwrap();
    std::fs::rename(root.join("var/log"), root.join("var/log.1")).unwrap();
    std::fs::hard_link(root.join("var/log.1"), root.join("var/log.link")).unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    set_xattr(&root.join("var"), "user.k", b"v");
}

/// The tree of a mount, which must not be empty.
fn tree(root: &Path) -> Tree {
    let t = dir_tree(root);
    assert!(t.entries.len() > 5, "{t:?}");
    t
}

fn same(want: &Tree, got: &Tree, what: &str) {
    if let Some(d) = difference(want, got) {
        panic!("{what}: {d}");
    }
}

#[test]
fn mount_overlay_round_trips_with_the_kernel_s_overlayfs() {
    const TEST: &str = "mount_overlay_round_trips_with_the_kernel_s_overlayfs";
    if !fuse(TEST) {
        return;
    }
    let s = Scratch::new("cli-mount-overlay");
    if !kernel_overlay(TEST, &s) {
        return;
    }
    let layers = Layers::new(&s);
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.as_std_path();

    // The lower layers alone: the kernel's view, read-only, and ours.
    kernel_mount(mnt, &format!("lowerdir={}", layers.lowerdir())).unwrap();
    let kernel_lowers = tree(mnt);
    unmount(mnt);
    let g = mount(
        &[
            "overlay",
            mnt.to_str().unwrap(),
            "-o",
            &format!("lowerdir={}", layers.lowerdir()),
        ],
        mnt,
    );
    same(
        &kernel_lowers,
        &tree(mnt),
        "a read-only mount of the lowers",
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/app.conf")).unwrap(),
        "port = 8080\n"
    );
    assert!(!mnt.join("etc/motd").exists(), "whited out");
    assert!(
        !mnt.join("srv/www/old.html").exists(),
        "below an opaque dir"
    );
    let e = std::fs::write(mnt.join("etc/app.conf"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "EROFS without an upper: {e}");
    assert_eq!(mounted_source(mnt).as_deref(), Some("overlay"));
    run(Command::new("umount").arg(mnt));
    drop(g);

    // Ours writes, the kernel reads what it wrote.
    let (ours_upper, ours_work) = (s.path("ours,upper"), s.path("ours:work"));
    std::fs::create_dir_all(&ours_upper).unwrap();
    std::fs::create_dir_all(&ours_work).unwrap();
    let esc = |p: &Utf8PathBuf| p.as_str().replace(':', "\\:").replace(',', "\\,");
    let data = |upper: &Utf8PathBuf, work: &Utf8PathBuf| {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            layers.lowerdir(),
            esc(upper),
            esc(work)
        )
    };
    let g = mount(
        &[
            "overlay",
            mnt.to_str().unwrap(),
            "-o",
            &format!("rw,nosuid,{}", data(&ours_upper, &ours_work)),
        ],
        mnt,
    );
    change(mnt);
    let ours = tree(mnt);
    run(Command::new("umount").arg(mnt));
    drop(g);
    // The changes are on disk in the kernel's format.
    assert!(is_whiteout(ours_upper.join("usr/bin/hi").as_std_path()));
    assert_eq!(
        std::fs::read_to_string(ours_upper.join("etc/app.conf")).unwrap(),
        "port = 9090\n"
    );
    // The kernel takes the same escapes.
    kernel_mount(mnt, &data(&ours_upper, &ours_work)).unwrap();
    let kernel_reads_ours = tree(mnt);
    unmount(mnt);
    same(
        &ours,
        &kernel_reads_ours,
        "the kernel mounting what our mount wrote",
    );

    // The kernel writes the same changes, ours reads what it wrote.
    let (k_upper, k_work) = (s.path("kernel-upper"), s.path("kernel-work"));
    std::fs::create_dir_all(&k_upper).unwrap();
    std::fs::create_dir_all(&k_work).unwrap();
    kernel_mount(mnt, &data(&k_upper, &k_work)).unwrap();
    change(mnt);
    let kernel = tree(mnt);
    unmount(mnt);
    same(
        &kernel,
        &ours,
        "the same changes through the kernel and through ours",
    );
    let g = mount(
        &[
            "overlay",
            mnt.to_str().unwrap(),
            "-o",
            &data(&k_upper, &k_work),
        ],
        mnt,
    );
    same(
        &kernel,
        &tree(mnt),
        "our mount reading what the kernel wrote",
    );
    // And it goes on writing there: the kernel reads that too.
    std::fs::remove_file(mnt.join("var/log.link")).unwrap();
    std::fs::write(mnt.join("etc/new"), "new\n").unwrap();
    let ours_again = tree(mnt);
    run(Command::new("fusermount3").arg("-u").arg(mnt));
    drop(g);
    kernel_mount(mnt, &data(&k_upper, &k_work)).unwrap();
    same(
        &ours_again,
        &tree(mnt),
        "the kernel after our second session",
    );
    unmount(mnt);
}

/// The process whose command line is `layerstack mount --foreground
/// --ready-pipe ... MNT` (the background process of `mnt`).
fn daemon_of(mnt: &Path) -> Pid {
    let mnt = mnt.to_str().unwrap();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&&b"--ready-pipe"[..]) && args.contains(&mnt.as_bytes()) {
            return Pid::from_raw(pid).unwrap();
        }
    }
    panic!("no background process serves {mnt}");
}

/// Waits for `pid`, a child of ours (this process is a subreaper, so the
/// background process, orphaned when `layerstack mount` returned, is);
/// its exit status.
fn exit_status(pid: Pid) -> i32 {
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .expect("a status");
    assert!(
        status.exit_status().is_some(),
        "the background process ended by a signal: {status:?}"
    );
    status.exit_status().unwrap()
}

#[test]
fn mount_returns_once_mounted_and_its_process_ends_with_the_mount() {
    const TEST: &str = "mount_returns_once_mounted_and_its_process_ends_with_the_mount";
    if !fuse(TEST) {
        return;
    }
    // The background processes are orphaned when `layerstack mount`
    // returns: they come to this process, which can then see how they end.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let s = Scratch::new("cli-mount-daemon");
    let lower = s.path("lower");
    std::fs::create_dir_all(lower.join("d")).unwrap();
    std::fs::write(lower.join("d/f"), "data\n").unwrap();
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.as_std_path();
    let opts = format!("lowerdir={lower}");
    let args = ["overlay", mnt.to_str().unwrap(), "-o", &opts];

    // umount: the background process ends, with status 0.
    let g = mount(&args, mnt);
    assert_eq!(std::fs::read_to_string(mnt.join("d/f")).unwrap(), "data\n");
    let pid = daemon_of(mnt);
    // It holds nothing of ours busy: its working directory is `/`.
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", pid.as_raw_nonzero())).unwrap(),
        Path::new("/")
    );
    run(Command::new("umount").arg(mnt));
    assert_eq!(exit_status(pid), 0);
    drop(g);

    // SIGTERM: it unmounts and ends with status 0.
    let g = mount(&args, mnt);
    let pid = daemon_of(mnt);
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    assert_eq!(exit_status(pid), 0);
    assert_eq!(mounted_type(mnt), None, "unmounted by SIGTERM");
    drop(g);

    // Busy (a file open): SIGTERM cannot unmount it; the process keeps
    // serving; once the file is closed a second SIGTERM ends it.
    let g = mount(&args, mnt);
    let pid = daemon_of(mnt);
    let file = std::fs::File::open(mnt.join("d/f")).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(mnt.join("d/f")).unwrap(), "data\n");
    drop(file);
    // The kernel sends FUSE's release after close returns: until the
    // mount is no longer busy a SIGTERM is refused again, so signal until
    // the process ends (it answers a refused one by serving on).
    for _ in 0..50 {
        rustix::process::kill_process(pid, Signal::TERM).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if mounted_type(mnt).is_none() {
            break;
        }
    }
    assert_eq!(exit_status(pid), 0);
    assert_eq!(mounted_type(mnt), None);
    drop(g);
}

#[test]
fn mount_f_serves_in_the_foreground_until_sigint() {
    const TEST: &str = "mount_f_serves_in_the_foreground_until_sigint";
    if !fuse(TEST) {
        return;
    }
    let s = Scratch::new("cli-mount-foreground");
    let lower = s.path("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(lower.join("f"), "x\n").unwrap();
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_layerstack"))
        .args(["mount", "-f", "overlay", mnt.as_str(), "-o"])
        .arg(format!("lowerdir={lower}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _g = Guard(mnt.clone().into_std_path_buf());
    eventually("the foreground mount", || {
        mounted_type(mnt.as_std_path()).is_some()
    });
    assert_eq!(std::fs::read_to_string(mnt.join("f")).unwrap(), "x\n");
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let mut child = child;
    // Busy (a file open): the SIGINT is refused with a warning, and the
    // process serves on.
    let file = std::fs::File::open(mnt.join("f")).unwrap();
    rustix::process::kill_process(pid, Signal::INT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    assert_eq!(std::fs::read_to_string(mnt.join("f")).unwrap(), "x\n");
    drop(file);
    // The kernel sends FUSE's release after close returns: until then the
    // mount is still busy, and a SIGINT is refused again. Signal until the
    // process ends.
    let mut refused = 1;
    for _ in 0..50 {
        rustix::process::kill_process(pid, Signal::INT).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        refused += 1;
    }
    if child.try_wait().unwrap().is_none() {
        // Never hang the suite on it.
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("50 SIGINTs did not end the foreground mount: {out:?}");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(&out.stdout[..], b"");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        (1..=refused).contains(&stderr.lines().count())
            && stderr
                .lines()
                .all(|l| l.contains("busy") && l.contains("still serving")),
        "only the warnings of refused signals ({refused}): {stderr:?}"
    );
    assert_eq!(mounted_type(mnt.as_std_path()), None);
}

#[test]
fn mount_of_an_image_is_read_only_or_writes_its_upper_layer() {
    const TEST: &str = "mount_of_an_image_is_read_only_or_writes_its_upper_layer";
    if !fuse(TEST) {
        return;
    }
    let s = Scratch::new("cli-mount-image");
    let layout = demo(&s);
    let image = format!("{layout}:demo");
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.as_std_path();

    // Read-only: the merged tree, as `ls` lists it; every change EROFS.
    let g = mount(&[&image, mnt.to_str().unwrap()], mnt);
    assert_eq!(mounted_source(mnt).as_deref(), Some(image.as_str()));
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/app.conf")).unwrap(),
        "port = 8080\n"
    );
    assert_eq!(
        std::fs::read_link(mnt.join("usr/bin/hi")).unwrap(),
        Path::new("hello")
    );
    let mut names: Vec<String> = std::fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["etc", "srv", "usr", "var"]);
    assert!(!mnt.join("etc/motd").exists(), "layer 1 deletes it");
    for e in [
        std::fs::write(mnt.join("etc/app.conf"), "x").unwrap_err(),
        std::fs::create_dir(mnt.join("new")).unwrap_err(),
        std::fs::remove_file(mnt.join("usr/bin/hello")).unwrap_err(),
    ] {
        assert_eq!(e.raw_os_error(), Some(30), "EROFS: {e}");
    }
    run(Command::new("umount").arg(mnt));
    drop(g);

    // With an upper layer: the changes land there, in the kernel's format.
    let (upper, work) = (s.path("upper"), s.path("work"));
    let g = mount(
        &[
            &image,
            mnt.to_str().unwrap(),
            "--upper",
            upper.as_str(),
            "--work",
            work.as_str(),
        ],
        mnt,
    );
    std::fs::write(mnt.join("etc/app.conf"), "port = 1\n").unwrap();
    std::fs::remove_file(mnt.join("usr/bin/hello")).unwrap();
    run(Command::new("umount").arg(mnt));
    drop(g);
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/app.conf")).unwrap(),
        "port = 1\n"
    );
    assert!(is_whiteout(upper.join("usr/bin/hello").as_std_path()));
    // A second session over the same upper sees them.
    let g = mount(
        &[
            &image,
            mnt.to_str().unwrap(),
            "-o",
            &format!("upperdir={upper},workdir={work}"),
        ],
        mnt,
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/app.conf")).unwrap(),
        "port = 1\n"
    );
    assert!(!mnt.join("usr/bin/hello").exists());
    run(Command::new("umount").arg(mnt));
    drop(g);
}

#[test]
fn mount_t_fuse_layerstack_runs_the_tool_as_a_mount_helper() {
    const TEST: &str = "mount_t_fuse_layerstack_runs_the_tool_as_a_mount_helper";
    // mount.fuse3 has no version query; fusermount3 comes in the same
    // package.
    let fuse3 = |t| {
        crate::tools::tool_runs(
            t,
            "mount.fuse3",
            "fuse3",
            Command::new("fusermount3").arg("-V"),
            |_| true,
        )
    };
    if !fuse(TEST) || !fuse3(TEST) {
        return;
    }
    let s = Scratch::new("cli-mount-helper");
    let lower = s.path("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(lower.join("f"), "helped\n").unwrap();
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.as_std_path();
    let exe = Path::new(env!("CARGO_BIN_EXE_layerstack"));

    // mount.fuse3, called as mount(8) calls it for `-t fuse.layerstack`
    // (`SOURCE MNT -o OPTS -t TYPE`), runs `layerstack SOURCE MNT -o OPTS`
    // from PATH. (mount(8) itself runs it with a PATH of its own, of
    // /usr/local/bin and the system's directories.)
    let path = format!(
        "{}:{}",
        exe.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mount_fuse3 = |opts: &str| {
        Command::new("mount.fuse3")
            .arg("overlay")
            .arg(mnt)
            .args(["-o", opts, "-t", "fuse.layerstack"])
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let out = mount_fuse3(&format!(
        "rw,nosuid,noatime,lowerdir={lower},_netdev,dev,suid"
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!((&out.stdout[..], &out.stderr[..]), (&b""[..], &b""[..]));
    let g = Guard(mnt.to_owned());
    assert_fuse(mnt);
    assert_eq!(std::fs::read_to_string(mnt.join("f")).unwrap(), "helped\n");
    run(Command::new("umount").arg(mnt));
    drop(g);

    // An unknown option: the helper fails with the tool's line.
    let out = mount_fuse3(&format!("lowerdir={lower},bogus"));
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: unknown mount option `bogus` (known: "),
        "{stderr}"
    );
    assert_eq!(mounted_type(mnt), None);

    // A symlink /sbin/mount.fuse.layerstack, which mount(8) runs itself.
    let helper = Path::new("/sbin/mount.fuse.layerstack");
    if std::fs::symlink_metadata(helper).is_ok() {
        eprintln!(
            "SKIP {TEST} (the /sbin symlink part): {} is there already",
            helper.display()
        );
        return;
    }
    std::os::unix::fs::symlink(exe, helper).unwrap();
    let mount8 = |opts: &str| {
        Command::new("mount")
            .args(["-t", "fuse.layerstack", "overlay"])
            .arg(mnt)
            .args(["-o", opts])
            .output()
    };
    let good = mount8(&format!(
        "lowerdir={lower},nosuid,noatime,x-layerstack.test=1,_netdev"
    ));
    let g = Guard(mnt.to_owned());
    let read = std::fs::read_to_string(mnt.join("f"));
    let _ = Command::new("umount").arg(mnt).status();
    drop(g);
    let bad = mount8(&format!("lowerdir={lower},ro,bogus"));
    let _ = std::fs::remove_file(helper);
    let good = good.unwrap();
    assert!(good.status.success(), "{good:?}");
    assert_eq!((&good.stdout[..], &good.stderr[..]), (&b""[..], &b""[..]));
    assert_eq!(read.unwrap(), "helped\n");
    let bad = bad.unwrap();
    assert!(!bad.status.success(), "{bad:?}");
    assert!(
        String::from_utf8(bad.stderr)
            .unwrap()
            .starts_with("error: unknown mount option `bogus` (known: "),
    );
    assert_eq!(mounted_type(mnt), None);
}

#[test]
fn mount_errors_are_one_line_naming_the_option_or_the_path() {
    let s = Scratch::new("cli-mount-errors");
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lower = s.path("lower");
    std::fs::create_dir(&lower).unwrap();
    let m = mnt.as_str();
    let known = "(known: lowerdir, upperdir, workdir, redirect_dir, index, metacopy, userxattr, volatile, ro, fsname, allow_other, and the generic flags (rw, nosuid, noatime, x-*, ...))";
    for (opts, want) in [
        (
            format!("lowerdir={lower},xino=auto"),
            format!("error: unknown mount option `xino=auto` {known}\n"),
        ),
        (
            format!("lowerdir={lower},index=yes"),
            "error: mount option `index=yes` has a value it cannot have (allowed: on or off)\n"
                .to_owned(),
        ),
        (
            format!("lowerdir={lower},redirect_dir=nofollow"),
            "error: mount option `redirect_dir=nofollow` is not supported: layerstack always follows the redirects a layer holds\n".to_owned(),
        ),
        (
            "upperdir=/u,workdir=/w".to_owned(),
            "error: the overlay source needs its layers: -o lowerdir=DIR[:DIR...] (leftmost on top)\n".to_owned(),
        ),
        (
            format!("lowerdir={lower},upperdir=/u"),
            "error: mount option `upperdir=` needs `workdir=` (on the same filesystem)\n"
                .to_owned(),
        ),
        (
            format!("lowerdir={lower}::/data"),
            format!("error: mount option `lowerdir={lower}::/data`: data-only lower layers (`::`) are not supported\n"),
        ),
    ] {
        assert_eq!(fails(&["mount", "overlay", m, "-o", &opts], 2), want);
    }
    assert_eq!(
        fails(
            &["mount", "img:v1", m, "-o", &format!("lowerdir={lower}")],
            2
        ),
        "error: mount option `lowerdir=` is for the overlay source; the layers of img:v1 are the lower layers\n"
    );
    // Missing directories: the background process fails before mounting,
    // and its line and status are the command's.
    let missing = s.path("missing");
    assert_eq!(
        fails(
            &["mount", "overlay", m, "-o", &format!("lowerdir={missing}")],
            1
        ),
        format!("error: failed to access `{missing}`: no such file or directory\n")
    );
    assert_eq!(
        fails(
            &[
                "mount",
                "overlay",
                missing.as_str(),
                "-o",
                &format!("lowerdir={lower}")
            ],
            1
        ),
        format!("error: failed to mount on `{missing}`: no such file or directory\n")
    );
    assert_eq!(
        fails(
            &[
                "mount",
                "-f",
                "overlay",
                missing.as_str(),
                "-o",
                &format!("lowerdir={lower}")
            ],
            1
        ),
        format!("error: failed to mount on `{missing}`: no such file or directory\n")
    );
    // A missing upperdir or workdir is not made (as the kernel's overlayfs,
    // which fails with ENOENT): the error names it.
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    for (upper, work, named) in [(&missing, &work, &missing), (&lower, &missing, &missing)] {
        assert_eq!(
            fails(
                &[
                    "mount",
                    "overlay",
                    m,
                    "-o",
                    &format!("lowerdir={lower},upperdir={upper},workdir={work}")
                ],
                1
            ),
            format!("error: failed to access `{named}`: no such file or directory\n")
        );
        assert!(!missing.exists(), "not made");
    }
    assert_eq!(mounted_type(mnt.as_std_path()), None);
}

#[test]
fn a_second_session_on_the_same_upper_or_work_is_busy() {
    const TEST: &str = "a_second_session_on_the_same_upper_or_work_is_busy";
    if !fuse(TEST) {
        return;
    }
    let s = Scratch::new("cli-mount-busy");
    let dirs = ["lower", "upper", "work", "upper2", "work2", "mnt", "mnt2"].map(|d| s.path(d));
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let [lower, upper, work, upper2, work2, mnt, mnt2] = &dirs;
    let g = mount(
        &[
            "overlay",
            mnt.as_str(),
            "-o",
            &format!("lowerdir={lower},upperdir={upper},workdir={work}"),
        ],
        mnt.as_std_path(),
    );
    std::fs::write(mnt.join("kept"), "first session\n").unwrap();
    // The same pair, or either of it with another: EBUSY (the kernel's
    // answer to a second mount of an upper or work directory in use),
    // before the work directory is touched.
    for (u, w, busy, what) in [
        (upper, work, upper, "upperdir"),
        (upper, work2, upper, "upperdir"),
        (upper2, work, work, "workdir"),
    ] {
        assert_eq!(
            fails(
                &[
                    "mount",
                    "overlay",
                    mnt2.as_str(),
                    "-o",
                    &format!("lowerdir={lower},upperdir={u},workdir={w}"),
                ],
                1
            ),
            format!(
                "error: failed to mount on `{busy}`: resource busy: {what} is in use as the upperdir or workdir of another open upper layer (a mount, build or unpack)\n"
            )
        );
        assert_eq!(mounted_type(mnt2.as_std_path()), None);
    }
    // The first session goes on; once it ends, the pair is free again.
    assert_eq!(
        std::fs::read_to_string(mnt.join("kept")).unwrap(),
        "first session\n"
    );
    run(Command::new("umount").arg(mnt));
    daemon_of_gone(mnt.as_std_path());
    drop(g);
    let g2 = mount(
        &[
            "overlay",
            mnt2.as_str(),
            "-o",
            &format!("lowerdir={lower},upperdir={upper},workdir={work}"),
        ],
        mnt2.as_std_path(),
    );
    assert_eq!(
        std::fs::read_to_string(mnt2.join("kept")).unwrap(),
        "first session\n"
    );
    run(Command::new("umount").arg(mnt2));
    drop(g2);
}

/// Waits until no background process serves `mnt` (it ends once
/// unmounted, releasing its locks).
fn daemon_of_gone(mnt: &Path) {
    let mnt = mnt.to_str().unwrap().as_bytes().to_owned();
    eventually("the background process ends", || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.contains(&&b"--ready-pipe"[..]) && args.contains(&mnt.as_slice())
            })
        })
    });
}

#[test]
fn a_rootless_mount_has_allow_other_only_where_fuse_conf_permits_it() {
    const TEST: &str = "a_rootless_mount_has_allow_other_only_where_fuse_conf_permits_it";
    let tools = ["setpriv", "unshare", "fusermount3"];
    if !fuse(TEST) || !tools.iter().all(|t| crate::tools::have(t, TEST)) {
        return;
    }
    let s = Scratch::new("cli-mount-rootless");
    let (lower, mnt) = (s.path("lower"), s.path("mnt"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::write(lower.join("f"), "lower\n").unwrap();
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("chown").args(["65534:65534", mnt.as_str()]));
    run(Command::new("chmod").args(["755", s.0.as_str(), lower.as_str()]));
    let permitted = std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|c| {
        c.lines()
            .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other")
    });
    // `steps` as uid 65534, in a mount namespace of its own where
    // /dev/fuse is open to every user as on a usual system (here it may be
    // root's only, and fuser then fails before trying fusermount3).
    let fuse_node = s.path("fuse");
    let nobody = |steps: &str| {
        let steps = steps.replace(
            "AS_NOBODY",
            "setpriv --reuid=65534 --regid=65534 --clear-groups",
        );
        let script = format!(
            "[ -e {fuse_node} ] || mknod -m 666 {fuse_node} c 10 229; mount --bind {fuse_node} /dev/fuse; {steps}"
        );
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-ec", &script])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let exe = env!("CARGO_BIN_EXE_layerstack");
    // It mounts through the setuid fusermount3, reads, and unmounts.
    let (code, stdout, stderr) = nobody(&format!(
        "AS_NOBODY {exe} mount overlay {mnt} -o lowerdir={lower}; grep \" {mnt} \" /proc/self/mounts; AS_NOBODY cat {mnt}/f; AS_NOBODY fusermount3 -u {mnt}"
    ));
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    let line = stdout.lines().next().unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[2], "fuse.layerstack", "{line}");
    let options: Vec<&str> = fields[3].split(',').collect();
    assert_eq!(options.contains(&"allow_other"), permitted, "{line}");
    assert!(options.contains(&"user_id=65534"), "{line}");
    assert_eq!(stdout.lines().nth(1), Some("lower"));
    // Asked for where it is not permitted: fusermount3's refusal.
    if !permitted {
        let (code, _, stderr) = nobody(&format!(
            "AS_NOBODY {exe} mount overlay {mnt} -o lowerdir={lower},allow_other"
        ));
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(
                "option allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn mount_help_says_the_forms_and_the_options() {
    let help = ok(&["mount", "--help"]);
    assert!(
        help.starts_with(
            "\
Mount layers (or an image) as a filesystem through FUSE, with the semantics of the kernel's overlayfs and its on-disk format

Usage: layerstack mount [-f] overlay MNT -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTION...]
       layerstack mount [-f] LAYOUT[:TAG] MNT [--upper DIR --work DIR] [-o OPTIONS]
       layerstack mount [-f] NAME SOURCE MNT -o OPTIONS
"
        ),
        "{help}"
    );
    assert!(help.ends_with(&format!("{}\n", "  umount /mnt")), "{help}");
    for line in [
        "  lowerdir=DIR[:DIR...]   the lower layers, leftmost on top (overlay source)\n",
        "  -f, --foreground   Serve in the foreground until unmounted (without it the command returns once the mount is ready, and a process of its own serves it)\n",
        "SOURCE is `overlay` (its layers are in -o lowerdir=...) or an image,\n",
        "As a mount helper: `mount -t fuse.layerstack overlay MNT -o lowerdir=...`\n",
    ] {
        assert!(help.contains(line), "{line:?} in {help}");
    }
    assert!(!help.contains("ready-pipe"), "hidden: {help}");
    let top = layerstack(&["--help"]);
    assert!(top.stdout.contains("\n  mount "), "{}", top.stdout);
}
