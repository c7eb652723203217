//! The first 1-byte write into a lower file of 1 GiB and of 4 KiB: the
//! copy-up plus the write. A memory copy-up shares the lower file's
//! buffers, so the cost must not depend on the file's size.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use layerstack::{Layer, MemLayer, MergedView};

fn copy_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("copy_up_first_write");
    for (name, size) in [("4KiB", 4usize << 10), ("1GiB", 1usize << 30)] {
        let mut lower = MemLayer::new();
        lower.add_file("var/lib/data.bin", vec![7u8; size]).unwrap();
        let lower: Arc<dyn Layer> = Arc::new(lower);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || MergedView::new(vec![lower.clone()], MemLayer::new()).unwrap(),
                |view| {
                    view.write_at("var/lib/data.bin", (size / 2) as u64, b"x")
                        .unwrap();
                    black_box(view)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, copy_up);
criterion_main!(benches);
