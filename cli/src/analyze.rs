//! `analyze`: where an image's bytes go, layer by layer, with the waste
//! counted as `layerstack::oci::analyze` defines it; rules for CI, and a
//! picture.

use std::fmt::Write as _;

use camino::Utf8Path;
use layerstack::oci::{Analysis, WastedPath};
use layerstack::{Error, ErrorKind, Operation, Result};
use serde_json::json;

use crate::ImageRef;
use crate::outln;
use crate::output::{Format, Out, escape_name, thousands};

/// The thresholds of `--ci`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Fail below this efficiency.
    pub min_efficiency: Option<f64>,
    /// Fail above this many wasted bytes.
    pub max_wasted_bytes: Option<u64>,
    /// Fail above this ratio of the user's wasted to shipped bytes.
    pub max_user_wasted_ratio: Option<f64>,
    /// Paths wasting fewer bytes do not count for the rules.
    pub ignore_below: u64,
}

/// Which layers are the base: a count, or the layers an image shares.
pub enum Base<'a> {
    Layers(usize),
    Image(&'a ImageRef),
}

/// `layerstack analyze`.
pub fn run(
    image: &ImageRef,
    base: Option<Base<'_>>,
    top: usize,
    svg: Option<&Utf8Path>,
    rules: Option<Rules>,
    format: Format,
    out: &mut Out,
) -> Result<()> {
    let (store, img) = image.open()?;
    let base = match base {
        None => 0,
        Some(Base::Layers(n)) => n,
        Some(Base::Image(other)) => {
            let (_, base_img) = other.open()?;
            let ours = img.chain_ids();
            ours.iter()
                .zip(base_img.chain_ids())
                .take_while(|(a, b)| *a == b)
                .count()
        }
    };
    let a = Analysis::of_image(&store, &img, base)?;
    match format {
        Format::Json => out.json(&to_json(&a))?,
        Format::Text => print_text(image, &a, top, out)?,
    }
    if let Some(path) = svg {
        std::fs::write(path, draw_svg(image, &a, top))
            .map_err(|e| Error::from_io(&e, Operation::Write, path.as_str()))?;
    }
    if let Some(rules) = rules {
        check(image, &a, &rules)?;
    }
    Ok(())
}

fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

fn print_text(image: &ImageRef, a: &Analysis, top: usize, out: &mut Out) -> Result<()> {
    outln!(
        out,
        "{}: {} layers ship {} bytes ({} compressed); {} bytes visible, {} wasted: efficiency {}",
        escape_name(image.to_string()),
        a.layers.len(),
        thousands(a.shipped),
        thousands(a.compressed),
        thousands(a.visible),
        thousands(a.wasted),
        percent(a.efficiency())
    )?;
    if a.base > 0 {
        outln!(
            out,
            "user layers ({} and up): ship {} bytes, waste {} ({})",
            a.base,
            thousands(a.user_shipped),
            thousands(a.user_wasted),
            percent(a.user_wasted_ratio())
        )?;
    }
    outln!(out)?;
    outln!(
        out,
        "{:>5}  {:<19}  {:>13}  {:>13}  {:>13}  {:>13}  command",
        "layer",
        "digest",
        "shipped",
        "compressed",
        "adds",
        "wastes"
    )?;
    for l in &a.layers {
        let digest = l
            .digest
            .as_deref()
            .map_or_else(String::new, |d| d.chars().take(19).collect());
        outln!(
            out,
            "{:>5}  {:<19}  {:>13}  {:>13}  {:>13}  {:>13}  {}",
            l.index,
            digest,
            thousands(l.shipped),
            thousands(l.compressed),
            thousands(l.adds),
            thousands(l.wastes),
            escape_name(l.created_by.as_deref().unwrap_or("-"))
        )?;
    }
    if !a.paths.is_empty() {
        outln!(out)?;
        outln!(out, "largest wasted paths:")?;
        for p in a.paths.iter().take(top) {
            outln!(
                out,
                "{:>13}  {}  ({})",
                thousands(p.bytes),
                layerstack::escape_name(p.path.as_bytes()),
                copies(p)
            )?;
        }
        if a.paths.len() > top {
            outln!(out, "  ... and {} more", a.paths.len() - top)?;
        }
    }
    if !a.top_level.is_empty() {
        outln!(out)?;
        outln!(out, "visible bytes by top-level name:")?;
        for (name, bytes) in a.top_level.iter().take(top) {
            outln!(out, "{:>13}  {}", thousands(*bytes), escape_name(name))?;
        }
    }
    Ok(())
}

/// `layer 0 deleted by 2; layer 1 overwritten by 1`.
fn copies(p: &WastedPath) -> String {
    p.copies
        .iter()
        .map(|c| format!("layer {}: {} in layer {}", c.layer, c.reason.as_str(), c.by))
        .collect::<Vec<_>>()
        .join("; ")
}

fn to_json(a: &Analysis) -> serde_json::Value {
    json!({
        "shipped": a.shipped,
        "compressed": a.compressed,
        "visible": a.visible,
        "wasted": a.wasted,
        "efficiency": a.efficiency(),
        "base_layers": a.base,
        "user_shipped": a.user_shipped,
        "user_wasted": a.user_wasted,
        "user_wasted_ratio": a.user_wasted_ratio(),
        "layers": a.layers.iter().map(|l| json!({
            "index": l.index,
            "digest": l.digest,
            "created_by": l.created_by,
            "shipped": l.shipped,
            "compressed": l.compressed,
            "adds": l.adds,
            "wastes": l.wastes,
        })).collect::<Vec<_>>(),
        "wasted_paths": a.paths.iter().map(|p| {
            let mut entry = json!({
                "wasted": p.bytes,
                "copies": p.copies.iter().map(|c| json!({
                    "layer": c.layer,
                    "bytes": c.bytes,
                    "reason": c.reason.as_str(),
                    "by": c.by,
                })).collect::<Vec<_>>(),
            });
            crate::output::json_name(&mut entry, "path", p.path.as_bytes());
            entry
        }).collect::<Vec<_>>(),
        "top_level": a.top_level.iter().map(|(name, bytes)| json!({
            "name": name,
            "visible": bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Fails with the first rule the analysis breaks, naming it.
fn check(image: &ImageRef, a: &Analysis, rules: &Rules) -> Result<()> {
    let counted = |p: &&WastedPath| p.bytes >= rules.ignore_below;
    let wasted: u64 = a.paths.iter().filter(counted).map(|p| p.bytes).sum();
    let user_wasted: u64 = a
        .paths
        .iter()
        .filter(counted)
        .flat_map(|p| &p.copies)
        .filter(|c| c.by >= a.base)
        .map(|c| c.bytes)
        .sum();
    let ratio = |x: u64, y: u64, empty: f64| {
        if y == 0 {
            empty
        } else {
            #[allow(clippy::cast_precision_loss)]
            let r = x as f64 / y as f64;
            r
        }
    };
    let efficiency = ratio(a.visible, a.visible + wasted, 1.0);
    let user_ratio = ratio(user_wasted, a.user_shipped, 0.0);
    let broken = if let Some(min) = rules.min_efficiency
        && efficiency < min
    {
        Some(format!(
            "efficiency {} is below --min-efficiency {}",
            percent(efficiency),
            percent(min)
        ))
    } else if let Some(max) = rules.max_wasted_bytes
        && wasted > max
    {
        Some(format!(
            "{} wasted bytes are over --max-wasted-bytes {}",
            thousands(wasted),
            thousands(max)
        ))
    } else if let Some(max) = rules.max_user_wasted_ratio
        && user_ratio > max
    {
        Some(format!(
            "the user layers waste {} of what they ship, over --max-user-wasted-ratio {}",
            percent(user_ratio),
            percent(max)
        ))
    } else {
        None
    };
    match broken {
        Some(detail) => Err(Error::new(
            ErrorKind::InvalidData,
            Operation::Analyze,
            image.to_string(),
        )
        .with_detail(detail)),
        None => Ok(()),
    }
}

/// The text of an XML attribute or element, escaped.
fn xml(s: &str) -> String {
    escape_name(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The layers as stacked bars (visible, then wasted, bytes of what each
/// ships) with their figures, and the largest wasted paths: an SVG that
/// reads without the terminal.
fn draw_svg(image: &ImageRef, a: &Analysis, top: usize) -> String {
    const WIDTH: f64 = 560.0;
    const ROW: f64 = 28.0;
    let widest = a.layers.iter().map(|l| l.shipped).max().unwrap_or(0).max(1);
    let paths: Vec<&WastedPath> = a.paths.iter().take(top).collect();
    let height = 90.0 + ROW * a.layers.len() as f64 + 40.0 + 18.0 * paths.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"{height:.0}\" \
         font-family=\"monospace\" font-size=\"13\" xml:space=\"preserve\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"900\" height=\"{height:.0}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"22\" font-size=\"15\">{}: efficiency {}</text>",
        xml(&image.to_string()),
        percent(a.efficiency())
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"42\">shipped {} bytes, visible {}, wasted {}</text>",
        thousands(a.shipped),
        thousands(a.visible),
        thousands(a.wasted)
    );
    let _ = writeln!(
        s,
        "<rect x=\"10\" y=\"52\" width=\"12\" height=\"12\" fill=\"#4c9a2a\"/>\
         <text x=\"28\" y=\"63\">visible</text>\
         <rect x=\"100\" y=\"52\" width=\"12\" height=\"12\" fill=\"#c0392b\"/>\
         <text x=\"118\" y=\"63\">wasted</text>"
    );
    // Bottom layer at the bottom, as a stack.
    for (row, l) in a.layers.iter().rev().enumerate() {
        let y = 80.0 + ROW * row as f64;
        #[allow(clippy::cast_precision_loss)]
        let scale = |b: u64| WIDTH * b as f64 / widest as f64;
        let (kept, lost) = (scale(l.adds), scale(l.shipped - l.adds));
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.0}\">layer {}</text>\
             <rect x=\"80\" y=\"{y:.0}\" width=\"{kept:.1}\" height=\"20\" fill=\"#4c9a2a\"/>\
             <rect x=\"{:.1}\" y=\"{y:.0}\" width=\"{lost:.1}\" height=\"20\" fill=\"#c0392b\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\">{} of {} visible</text>",
            y + 15.0,
            l.index,
            80.0 + kept,
            86.0 + kept + lost,
            y + 15.0,
            thousands(l.adds),
            thousands(l.shipped)
        );
    }
    let mut y = 80.0 + ROW * a.layers.len() as f64 + 24.0;
    if !paths.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{y:.0}\">largest wasted paths:</text>"
        );
        for p in paths {
            y += 18.0;
            let _ = writeln!(
                s,
                "<text x=\"10\" y=\"{y:.0}\">{:>13}  {}  ({})</text>",
                thousands(p.bytes),
                xml(&layerstack::escape_name(p.path.as_bytes())),
                xml(&copies(p))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
