//! `metadata` of existing and missing paths in views of 1, 8, 64 and 512
//! layers. Every layer adds files to the same directories, and the path
//! looked up lives in the bottom layer (the worst case for a top-down
//! search). The directories are visited before measuring, as the goal is
//! stated for visited directories: a lookup in 64 layers should cost about
//! what it costs in 1.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use layerstack::{Layer, MemLayer, MergedView};

fn stack(depth: usize) -> MergedView {
    let layers: Vec<Arc<dyn Layer>> = (0..depth)
        .map(|i| {
            let mut l = MemLayer::new();
            for j in 0..20 {
                l.add_file(format!("usr/share/doc/pkg{j}/layer{i}"), "x")
                    .unwrap();
            }
            if i + 1 == depth {
                l.add_file("usr/share/doc/pkg7/copyright", "GPL").unwrap();
            }
            Arc::new(l) as Arc<dyn Layer>
        })
        .collect();
    let view = MergedView::new(layers, MemLayer::new()).unwrap();
    view.metadata("usr/share/doc/pkg7/copyright").unwrap();
    view
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_synthetic");
    for depth in [1, 8, 64, 512] {
        let view = stack(depth);
        group.bench_with_input(BenchmarkId::new("existing", depth), &view, |b, v| {
            b.iter(|| black_box(v.metadata(black_box("usr/share/doc/pkg7/copyright"))).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("missing", depth), &view, |b, v| {
            b.iter(|| black_box(v.metadata(black_box("usr/share/doc/pkg7/missing"))).unwrap_err())
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
