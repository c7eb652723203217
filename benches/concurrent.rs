//! Readers on several threads (issue 20, item 3): a fixed amount of work
//! split over 1, 2 and 4 threads, so that the throughput criterion reports
//! grows with the threads only as far as readers really run in parallel.
//!
//! - `concurrent_reads/{mem,disk}_metadata/{1,2,4}`: `metadata` of 1,024
//!   small files dealt round-robin over 8 lower layers;
//! - `concurrent_reads/{mem,disk}_read/{1,2,4}`: `read` of the same files
//!   (100 bytes each).
//!
//! Each thread walks the files from its own starting point, so threads
//! rarely touch the same file at the same moment (which would measure the
//! sharing of one file, not of the view). The views are warm: criterion's
//! warm-up reads every file on every thread count first. The threads are
//! started in each iteration; with the work sizes below that costs well
//! under 2% of an iteration.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use camino::Utf8PathBuf;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use layerstack::layer::copy_layer;
use layerstack::{DirLayer, Layer, MemLayer, MergedView};

const LAYERS: usize = 8;
const DIRS: usize = 64;
const FILES: usize = 16;

fn names() -> Vec<String> {
    (0..DIRS)
        .flat_map(|d| (0..FILES).map(move |f| format!("usr/lib/pkg{d}/file{f}.so")))
        .collect()
}

/// The lower layers, top first: file `i` lives in layer `i % LAYERS`.
fn mem_layers(names: &[String]) -> Vec<MemLayer> {
    let mut layers: Vec<MemLayer> = (0..LAYERS).map(|_| MemLayer::new()).collect();
    for (i, name) in names.iter().enumerate() {
        layers[i % LAYERS].add_file(name, vec![b'x'; 100]).unwrap();
    }
    layers
}

fn mem_view(names: &[String]) -> MergedView {
    let lowers = mem_layers(names)
        .into_iter()
        .map(|l| Arc::new(l) as Arc<dyn Layer>)
        .collect();
    MergedView::new(lowers, MemLayer::new()).unwrap()
}

/// The same layers as directories in the kernel's format under `dir`.
fn disk_view(names: &[String], dir: &Utf8PathBuf) -> MergedView {
    let _ = std::fs::remove_dir_all(dir);
    let lowers = mem_layers(names)
        .iter()
        .enumerate()
        .map(|(i, mem)| {
            let path = dir.join(format!("lower{i}"));
            let mut layer =
                DirLayer::open_upper(&path, dir.join(format!("lower{i}.work"))).unwrap();
            copy_layer(mem, &mut layer).unwrap();
            drop(layer);
            Arc::new(DirLayer::open(&path).unwrap()) as Arc<dyn Layer>
        })
        .collect();
    let upper = DirLayer::open_upper(dir.join("upper"), dir.join("work")).unwrap();
    MergedView::new(lowers, upper).unwrap()
}

/// `ops` calls of `op`, split evenly over `threads` threads.
fn split(view: &MergedView, names: &[String], threads: usize, ops: usize, op: Op) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let start = t * names.len() / threads;
                for i in 0..ops / threads {
                    let name = &names[(start + i) % names.len()];
                    match op {
                        Op::Metadata => {
                            black_box(view.metadata(name).unwrap());
                        }
                        Op::Read => {
                            black_box(view.read(name).unwrap());
                        }
                    }
                }
            });
        }
    });
}

#[derive(Clone, Copy)]
enum Op {
    Metadata,
    Read,
}

fn concurrent(c: &mut Criterion) {
    let names = names();
    let scratch = Utf8PathBuf::from_path_buf(std::env::temp_dir())
        .unwrap()
        .join(format!(
            "layerstack-bench-concurrent-{}",
            std::process::id()
        ));
    let mem = mem_view(&names);
    let disk = disk_view(&names, &scratch);
    let mut group = c.benchmark_group("concurrent_reads");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    // About 3 ms of work in one thread for each (disk reads are system
    // calls: fewer of them).
    let cases = [
        ("mem_metadata", &mem, Op::Metadata, 65_536),
        ("mem_read", &mem, Op::Read, 32_768),
        ("disk_metadata", &disk, Op::Metadata, 65_536),
        ("disk_read", &disk, Op::Read, 1_024),
    ];
    for (name, view, op, ops) in cases {
        group.throughput(Throughput::Elements(ops as u64));
        for threads in [1, 2, 4] {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &t| {
                b.iter(|| split(view, &names, t, ops, op))
            });
        }
    }
    group.finish();
    drop(disk);
    let _ = std::fs::remove_dir_all(&scratch);
}

criterion_group!(benches, concurrent);
criterion_main!(benches);
