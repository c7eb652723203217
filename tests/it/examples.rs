//! Each example runs and prints what it teaches: the examples' own `run`
//! functions are compiled in here and their output is checked line by
//! line (the key lines, so the prose around them can improve).

use std::sync::atomic::{AtomicU64, Ordering};

use camino::Utf8PathBuf;

#[allow(dead_code)]
#[path = "../../examples/copy_up_and_whiteouts.rs"]
mod copy_up_and_whiteouts;
#[allow(dead_code)]
#[path = "../../examples/dockerfile_layers.rs"]
mod dockerfile_layers;
#[allow(dead_code)]
#[path = "../../examples/overlay_on_disk.rs"]
mod overlay_on_disk;
#[allow(dead_code)]
#[path = "../../examples/shared_layers.rs"]
mod shared_layers;

/// A fresh directory name under the temporary directory, removed on drop.
struct Scratch(Utf8PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "layerstack-example-{tag}-{}-{n}",
            std::process::id()
        ));
        let dir = Utf8PathBuf::from_path_buf(dir).expect("UTF-8 temp dir");
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The output's lines, each trimmed at the end.
fn lines(out: Vec<u8>) -> Vec<String> {
    String::from_utf8(out)
        .expect("UTF-8 output")
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect()
}

/// `want` appear in `got`, in this order (other lines may come between).
fn assert_in_order(got: &[String], want: &[&str]) {
    let mut at = 0;
    for w in want {
        match got[at..].iter().position(|g| g == w) {
            Some(i) => at += i + 1,
            None => panic!(
                "missing line (in order) {w:?}\n--- output:\n{}",
                got.join("\n")
            ),
        }
    }
}

#[test]
fn copy_up_and_whiteouts_shows_copy_up_whiteouts_and_opaque_directories() {
    let mut out = Vec::new();
    copy_up_and_whiteouts::run(&mut out).unwrap();
    assert_in_order(
        &lines(out),
        &[
            "== a read-only base layer under an empty upper layer",
            "     (nothing)",
            "== write through the symlink `conf`: etc/app.conf is copied up, parents first, then changed",
            "     /etc/app.conf          \"port = 8080\\n\"    from Upper",
            "     /etc                   Dir (copied up or new)",
            "     /etc/app.conf          File (copied up or new)",
            "== remove etc/motd: the base still has it, so the upper gets a whiteout",
            "     /etc/motd              whiteout (hides the name in the layers below)",
            "     /var/cache             opaque directory (hides everything below)",
            "     /var/cache/new.bin     File (copied up or new)",
            "The base layer is untouched: etc/app.conf there still reads \"port = 80\\n\".",
        ],
    );
}

#[test]
fn dockerfile_layers_shows_each_layer_its_changes_and_its_whiteouts() {
    let dir = Scratch::new("dockerfile");
    let mut out = Vec::new();
    dockerfile_layers::run(&dir.0, &mut out).unwrap();
    let got = lines(out);
    assert_eq!(
        got[0],
        format!("Built `app` in {}: 4 history entries, 3 layers.", dir.0)
    );
    assert_in_order(
        &got,
        &[
            "    A /app/static/old.css",
            "    D /app/README",
            "    app/.wh.README           whiteout: deletes /app/README below",
            "    D /app/static/old.css",
            "    A /app/static/site.css",
            "    app/static/.wh..wh..opq  opaque marker: /app/static hides what is below",
            "`CMD` changed only the config: its history entry is marked empty_layer, and it made no layer.",
            "A container sees /app/app.conf = \"debug = false\\n\", and in /app/static: [\"site.css\"].",
        ],
    );
}

#[test]
fn shared_layers_stores_the_base_layer_once() {
    let dir = Scratch::new("shared");
    let mut out = Vec::new();
    shared_layers::run(&dir.0, &mut out).unwrap();
    let got = lines(out);
    // The numbers, as the layout holds them.
    let (files, bytes) = {
        let mut files = 0;
        let mut bytes = 0;
        for e in std::fs::read_dir(dir.0.join("blobs/sha256")).unwrap() {
            let m = e.unwrap().metadata().unwrap();
            files += 1;
            bytes += m.len();
        }
        (files, bytes)
    };
    assert_eq!(files, 9, "3 manifests, 3 configs, 3 different layers");
    let layout = layerstack::oci::OciLayout::open(&dir.0).unwrap();
    let store = layerstack::oci::ImageStore::new(layout);
    let base = store.image(Some("base")).unwrap();
    let shared = base.layers()[0].size;
    assert!(shared > 64 << 10, "the base layer does not compress");
    let saved = 2 * shared;
    let named = bytes + saved;
    assert_in_order(
        &got,
        &[
            &format!(
                "The manifests name 11 blobs (manifest, config, layers), 9 different, {named} bytes in all."
            ),
            &format!("The layout holds 9 blob files, {bytes} bytes: each blob once."),
            &format!("Sharing saved {saved} bytes on disk."),
            "In memory too: the store imported 3 layers for 5 layer references (cached by ChainID).",
        ],
    );
}

#[test]
fn overlay_on_disk_prints_the_mount_command_for_the_tree_it_wrote() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_ROOT").is_none(),
            "overlay_on_disk needs root and LAYERSTACK_REQUIRE_ROOT is set"
        );
        eprintln!("SKIP overlay_on_disk: needs root (whiteouts are mknod 0/0)");
        return;
    }
    let dir = Scratch::new("overlay");
    let mut out = Vec::new();
    overlay_on_disk::run(&dir.0, &mut out).unwrap();
    let root = &dir.0;
    assert_in_order(
        &lines(out),
        &[
            &format!("wrote the base layer to {root}/lower"),
            &format!("the upper layer {root}/upper now holds:"),
            "  etc/motd         whiteout: a character device 0/0",
            "  var/cache        opaque directory: xattr trusted.overlay.opaque=y",
            &format!(
                "  mount -t overlay overlay -o lowerdir={root}/lower,upperdir={root}/upper,workdir={root}/work {root}/merged"
            ),
        ],
    );
}
