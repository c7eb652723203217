//! Lazy layers beside import, in one run, on the corpus image
//! (`benches/corpus.sh`: a three-layer Debian image umoci made, tag
//! `bench`), on a copy of its layout so the corpus never gains an index:
//!
//! - `cat_small/*`: read `etc/os-release` through a container view.
//! - `ls_r/*`: list the whole merged tree (`ls -R`: every directory read,
//!   every entry's metadata).
//!
//! Each as `import` (every layer imported into memory first, what every
//! command did before lazy layers), `lazy_cold` (the layer indexes
//! removed before each run: the first use builds them) and `lazy_warm`
//! (indexes cached). A fresh `ImageStore` each run.
//!
//! Then, not timed by criterion: the peak memory (GNU time's maximum
//! resident set) of `layerstack cat IMG etc/os-release` and
//! `layerstack ls -R IMG` warm and cold, and of the import path run in a
//! child process of this benchmark; and the size of each layer's index
//! beside its blob.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use layerstack::oci::{ImageStore, OciLayout, index_path};
use layerstack::{Layer, MemLayer, MergedView};

const IMAGE_TAG: &str = "bench";
const SMALL_FILE: &str = "etc/os-release";
const CHILD_ENV: &str = "LAYERSTACK_LAZY_BENCH_CHILD";

fn store(layout: &Path) -> (ImageStore, layerstack::oci::Image) {
    let store = ImageStore::new(OciLayout::open(common::utf8(layout)).expect("open the layout"));
    let image = store.image(Some(IMAGE_TAG)).expect("the bench image");
    (store, image)
}

#[derive(Clone, Copy)]
enum Reading {
    Import,
    Lazy,
}

fn view(layout: &Path, how: Reading) -> MergedView {
    let (store, image) = store(layout);
    let layers: Vec<Arc<dyn Layer>> = match how {
        Reading::Import => store
            .import_layers(&image)
            .expect("import")
            .into_iter()
            .map(|l| Arc::new(l) as Arc<dyn Layer>)
            .collect(),
        Reading::Lazy => store.layers(&image).expect("open lazily"),
    };
    MergedView::new(layers, MemLayer::new()).expect("a view")
}

fn cat(view: &MergedView) -> usize {
    view.read(SMALL_FILE).expect("read the small file").len()
}

fn ls_r(view: &MergedView) -> usize {
    let mut count = 0;
    let mut todo = vec![b"/".to_vec()];
    while let Some(dir) = todo.pop() {
        for e in view.read_dir(&dir[..]).expect("read a directory") {
            let mut p = dir.clone();
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(e.name.as_bytes());
            let meta = view.symlink_metadata(&p[..]).expect("stat");
            count += 1;
            if meta.is_dir() {
                todo.push(p);
            }
        }
    }
    count
}

fn drop_indexes(layout: &Path) {
    let _ = std::fs::remove_dir_all(layout.join(".layerstack"));
}

fn child(job: &str, layout: &Path) {
    let v = view(
        layout,
        if job.starts_with("import") {
            Reading::Import
        } else {
            Reading::Lazy
        },
    );
    let n = if job.ends_with("cat") {
        cat(&v)
    } else {
        ls_r(&v)
    };
    println!("{n}");
}

/// GNU time's maximum resident set size of `cmd`, in MiB.
fn peak_mib(cmd: &mut Command) -> Option<f64> {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs().filter_map(|(k, v)| Some((k, v?))) {
        timed.env(k, v);
    }
    let out = timed.output().ok()?;
    if !out.status.success() {
        eprintln!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let kb: f64 = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })?
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let corpus = common::target_dir().join("bench-corpus");
    if let Ok(job) = std::env::var(CHILD_ENV) {
        child(
            &job,
            Path::new(&std::env::var("LAYERSTACK_LAZY_BENCH_LAYOUT").unwrap()),
        );
        return;
    }
    // `cargo bench` passes `--bench`; a filter that names none of ours
    // means another benchmark was asked for.
    let ours = [
        "lazy",
        "cat_small/import",
        "cat_small/lazy_cold",
        "cat_small/lazy_warm",
        "ls_r/import",
        "ls_r/lazy_cold",
        "ls_r/lazy_warm",
    ];
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !ours.iter().any(|id| id.contains(a.as_str())))
    {
        return;
    }
    if !corpus.join("oci.done").exists() {
        eprintln!("SKIP lazy: no corpus (run benches/corpus.sh)");
        return;
    }
    let layout = common::scratch_root("lazy-bench").join("oci");
    let _ = std::fs::remove_dir_all(&layout);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(corpus.join("oci"))
        .arg(&layout)
        .status()
        .expect("run cp");
    assert!(copied.success());
    drop_indexes(&layout);

    // The same answers both ways, before anything is timed.
    let (imported, lazy) = (view(&layout, Reading::Import), view(&layout, Reading::Lazy));
    assert_eq!(
        imported.read(SMALL_FILE).unwrap(),
        lazy.read(SMALL_FILE).unwrap()
    );
    assert_eq!(ls_r(&imported), ls_r(&lazy));
    drop((imported, lazy));

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    for (name, job) in [
        ("cat_small", cat as fn(&MergedView) -> usize),
        ("ls_r", ls_r),
    ] {
        let mut g = c.benchmark_group(name);
        g.bench_function("import", |b| {
            b.iter(|| job(&view(&layout, Reading::Import)))
        });
        g.bench_function("lazy_cold", |b| {
            b.iter_batched(
                || drop_indexes(&layout),
                |()| job(&view(&layout, Reading::Lazy)),
                BatchSize::PerIteration,
            );
        });
        view(&layout, Reading::Lazy);
        g.bench_function("lazy_warm", |b| {
            b.iter(|| job(&view(&layout, Reading::Lazy)))
        });
        g.finish();
    }
    c.final_summary();

    // Peak memory, GNU time on the tool (lazy) and on this benchmark's
    // child (import, as every command read an image before).
    let tool = common::target_dir().join("release/layerstack");
    let image = format!("{}:{IMAGE_TAG}", layout.display());
    let exe = std::env::current_exe().expect("this benchmark's path");
    println!("\npeak memory (GNU time, maximum resident set):");
    for job in ["cat", "ls_r"] {
        let mut import = Command::new(&exe);
        import
            .env(CHILD_ENV, format!("import-{job}"))
            .env("LAYERSTACK_LAZY_BENCH_LAYOUT", &layout);
        let import = peak_mib(&mut import);
        let tool_cmd = |cmd: &mut Command| match job {
            "cat" => {
                cmd.arg("cat").arg(&image).arg(SMALL_FILE);
            }
            _ => {
                cmd.arg("ls").arg("-R").arg(&image);
            }
        };
        let (cold, warm) = if tool.exists() {
            drop_indexes(&layout);
            let mut cmd = Command::new(&tool);
            tool_cmd(&mut cmd);
            let cold = peak_mib(&mut cmd);
            let mut cmd = Command::new(&tool);
            tool_cmd(&mut cmd);
            (cold, peak_mib(&mut cmd))
        } else {
            eprintln!("(no {}: build the tool for its figures)", tool.display());
            (None, None)
        };
        let f = |m: Option<f64>| m.map_or_else(|| "-".to_owned(), |m| format!("{m:.1} MiB"));
        println!(
            "  {job:5} import {:>10}   lazy cold {:>10}   lazy warm {:>10}",
            f(import),
            f(cold),
            f(warm)
        );
    }
    // The index of each layer beside its blob.
    let (store, image) = store(&layout);
    store.layers(&image).expect("index every layer");
    println!("\nindex size against the layer:");
    for (i, d) in image.layers().iter().enumerate() {
        let index = std::fs::metadata(index_path(store.layout(), &d.digest)).map_or(0, |m| m.len());
        println!(
            "  layer {i}: blob {:.1} MiB, index {:.2} MiB ({:.2}% of the blob)",
            d.size as f64 / 1048576.0,
            index as f64 / 1048576.0,
            100.0 * index as f64 / d.size as f64
        );
    }
}
