//! `gc`: removes what no tag reaches, and what interrupted runs left.

use camino::Utf8Path;
use layerstack::Result;
use layerstack::oci::{GcMode, OciLayout};

use crate::count;
use crate::output::{Out, thousands};

/// `layerstack gc`.
pub fn run(dir: &Utf8Path, mode: GcMode, out: &mut Out) -> Result<()> {
    let layout = OciLayout::open(dir)?;
    let report = layout.collect_garbage_with(mode)?;
    let verb = match mode {
        GcMode::DryRun => "would remove",
        GcMode::Remove => "removed",
    };
    for digest in &report.removed {
        out.line(format_args!("{verb} blob {digest}"))?;
    }
    for digest in &report.cache_records {
        out.line(format_args!("{verb} the cache record of blob {digest}"))?;
    }
    for temp in &report.temporaries {
        out.line(format_args!("{verb} temporary file {temp}"))?;
    }
    out.line(format_args!(
        "{dir}: {verb} {} and {} ({} bytes)",
        count(
            report.removed.len() as u64,
            "unreferenced blob",
            "unreferenced blobs"
        ),
        count(
            report.temporaries.len() as u64,
            "stale temporary file",
            "stale temporary files"
        ),
        thousands(report.bytes_freed)
    ))
}
