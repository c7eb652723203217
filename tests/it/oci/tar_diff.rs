//! The tar reader against Go's `archive/tar`, the reader of Docker,
//! containerd, umoci and skopeo: both list every tar of a corpus of tricky
//! tars (`tests/tar_corpus/`, every header format, long names, base-256,
//! sparse files, header-only types with sizes, broken ones) and of tars
//! made from it by mutating headers, and must agree entry by entry: type,
//! name, link, size, mode, owners, mtime, device, xattrs and the sha256 of
//! the data (holes read as zeros), and where the archive ends or fails.
//!
//! Where this reader refuses an entry Go reads, the refusal must be one of
//! the documented ones (`docs/semantics.md`, "Layer tars"); any other
//! difference fails the test, and the tars that differ are kept in
//! `target/tmp/tar-diff-failures/`.
//!
//! The lister (`tests/tar_lister/main.go`, standard library only) is built
//! with `go build` offline (GOPROXY=off, caches under `target/tmp`).
//! Without `go` the test prints `SKIP` and passes, unless
//! `LAYERSTACK_REQUIRE_TOOLS` is set. `LAYERSTACK_TAR_DIFF_MUTANTS` sets
//! how many mutated tars a run compares (default 3000).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerstack::makedev;
use layerstack::oci::{Hasher, Limits, TarKind, TarReader};
use layerstack::{Error, ErrorKind, NameBuf};

use crate::support::tools::{Scratch, go_build};

/// Data past this is not hashed (as the lister does).
const MAX_HASHED: u64 = 256 << 20;

#[derive(Debug)]
struct GoEntry {
    kind: u8,
    name: Vec<u8>,
    link: Vec<u8>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: (i64, u32),
    dev: (i64, i64),
    pax: BTreeMap<Vec<u8>, Vec<u8>>,
    sha256: Option<String>,
}

#[derive(Debug, Default)]
struct GoListing {
    entries: Vec<GoEntry>,
    /// `None`: a clean end; else Go's error.
    error: Option<String>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn parse_entry(line: &str) -> GoEntry {
    let fields: BTreeMap<&str, &str> = line
        .split(' ')
        .skip(1)
        .map(|f| f.split_once('=').expect("key=value"))
        .collect();
    let num = |k: &str| fields[k].parse::<i64>().expect(k);
    let pair = |k: &str, sep: char| {
        let (a, b) = fields[k].split_once(sep).expect(k);
        (a.parse::<i64>().expect(k), b.parse::<i64>().expect(k))
    };
    let (secs, nsec) = pair("mtime", '.');
    let pax = match fields["pax"] {
        "-" => BTreeMap::new(),
        list => list
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once(':').expect("k:v");
                (unhex(k), unhex(v))
            })
            .collect(),
    };
    GoEntry {
        kind: u8::try_from(num("t")).expect("type"),
        name: unhex(fields["name"]),
        link: unhex(fields["link"]),
        size: num("size"),
        mode: num("mode"),
        uid: num("uid"),
        gid: num("gid"),
        mtime: (secs, u32::try_from(nsec).expect("nsec")),
        dev: pair("dev", ':'),
        pax,
        sha256: Some(fields["sha256"])
            .filter(|s| *s != "skip")
            .map(str::to_owned),
    }
}

/// Builds the lister; `None` (after a SKIP line) without `go`.
fn lister(test: &str) -> Option<PathBuf> {
    go_build("tar_lister", test)
}

/// What Go lists in each file, in order.
fn go_list(lister: &Path, files: &[PathBuf]) -> Vec<GoListing> {
    let mut listings = Vec::with_capacity(files.len());
    for batch in files.chunks(400) {
        let out = Command::new(lister)
            .args(batch)
            .output()
            .expect("run the lister");
        assert!(out.status.success(), "the lister failed");
        let text = String::from_utf8(out.stdout).expect("ASCII output");
        for line in text.lines() {
            if line.starts_with("file ") {
                listings.push(GoListing::default());
                continue;
            }
            let current = listings.last_mut().expect("a file line first");
            if line.starts_with("entry ") {
                current.entries.push(parse_entry(line));
            } else if let Some(e) = line.strip_prefix("error ") {
                current.error = Some(e.to_owned());
            } else {
                assert_eq!(line, "end", "unexpected lister line");
            }
        }
    }
    assert_eq!(listings.len(), files.len());
    listings
}

struct OurEntry {
    name: NameBuf,
    kind: TarKind,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    sha256: Option<String>,
}

struct OurListing {
    entries: Vec<OurEntry>,
    error: Option<Error>,
}

/// What our reader lists, reading every byte of data (holes as zeros).
fn our_list(tar: &[u8]) -> OurListing {
    let mut reader = TarReader::new(tar, Limits::default());
    let mut entries = Vec::new();
    let error = loop {
        let entry = match reader.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        let mut sha256 = None;
        if entry.kind == TarKind::File && entry.size <= MAX_HASHED {
            let mut hasher = Hasher::new();
            let mut at = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            let failed = loop {
                let offset = reader.data_offset();
                match reader.read_data(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        hasher.update(&vec![0u8; usize::try_from(offset - at).unwrap()]);
                        hasher.update(&buf[..n]);
                        at = offset + n as u64;
                    }
                    Err(e) => break Some(e),
                }
            };
            if let Some(e) = failed {
                break Some(e);
            }
            hasher.update(&vec![0u8; usize::try_from(entry.size - at).unwrap()]);
            sha256 = Some(hasher.finish().hex());
        }
        entries.push(OurEntry {
            name: entry.name.clone(),
            size: entry.size,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: (entry.mtime.sec, entry.mtime.nsec),
            xattrs: entry
                .xattrs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
            sha256,
            kind: entry.kind,
        });
    };
    OurListing { entries, error }
}

fn components(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    name.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Why this reader may refuse an entry Go reads: the documented refusals
/// (`docs/semantics.md`). `None`: no reason, a real difference.
fn documented_refusal(go: &GoEntry, ours: &Error) -> Option<&'static str> {
    let has_dotdot = |n: &[u8]| components(n).any(|c| c == b"..");
    let utf8 = |n: &[u8]| std::str::from_utf8(n).is_ok();
    let fits = |v: i64| u32::try_from(v).is_ok();
    if has_dotdot(&go.name) || (go.kind == b'1' && has_dotdot(&go.link)) {
        return Some("a `..` component in a name or hard link target");
    }
    let xattr_names_utf8 = go
        .pax
        .keys()
        .filter_map(|k| k.strip_prefix(b"SCHILY.xattr.".as_slice()))
        .all(utf8);
    if !xattr_names_utf8 {
        return Some("an xattr name that is not UTF-8");
    }
    if !fits(go.uid) || !fits(go.gid) {
        return Some("an owner beyond 32 bits");
    }
    if matches!(go.kind, b'3' | b'4') && !(fits(go.dev.0) && fits(go.dev.1)) {
        return Some("a device number beyond 32 bits");
    }
    if !b"01234567S".contains(&go.kind) {
        return Some("an unknown, volume-label or multi-volume entry type");
    }
    if go.kind == b'2' && go.link.is_empty() {
        return Some("an empty symlink target");
    }
    if components(&go.name).any(|c| c.len() > 255)
        || (go.kind == b'1' && components(&go.link).any(|c| c.len() > 255))
    {
        return Some("a name component longer than 255 bytes");
    }
    if ours.kind() == ErrorKind::LimitExceeded {
        return Some("a limit (entries, bytes, header bytes, path depth)");
    }
    if ours
        .to_string()
        .contains("disagrees with the header's size")
    {
        return Some("a PAX size that disagrees with a non-zero header size");
    }
    if ours.kind() == ErrorKind::InvalidInput
        && components(&go.name).any(|c| c.starts_with(b".wh.") || c.contains(&b'\0'))
    {
        return Some("a name the layer path refuses");
    }
    None
}

fn normalise(name: &[u8]) -> Vec<u8> {
    components(name).collect::<Vec<_>>().join(&b'/')
}

/// The first difference between Go's entry and ours.
fn entry_difference(go: &GoEntry, ours: &OurEntry) -> Option<String> {
    if go.name != ours.name.as_bytes() {
        return Some(format!(
            "name: Go {:?}, ours {:?}",
            String::from_utf8_lossy(&go.name),
            ours.name
        ));
    }
    let kind_ok = match (&ours.kind, go.kind) {
        (TarKind::File, b'0' | b'7' | b'S') => true,
        (TarKind::Dir, b'5') => true,
        (TarKind::Symlink(t), b'2') => t.as_bytes() == go.link,
        (TarKind::HardLink(t), b'1') => t.as_bytes() == normalise(&go.link),
        (TarKind::CharDevice(d), b'3') | (TarKind::BlockDevice(d), b'4') => {
            *d == makedev(go.dev.0 as u32, go.dev.1 as u32)
        }
        (TarKind::Fifo, b'6') => true,
        _ => false,
    };
    if !kind_ok {
        return Some(format!(
            "type: Go {:?} link {:?}, ours {:?}",
            char::from(go.kind),
            String::from_utf8_lossy(&go.link),
            ours.kind
        ));
    }
    if ours.kind == TarKind::File {
        if u64::try_from(go.size).ok() != Some(ours.size) {
            return Some(format!("size: Go {}, ours {}", go.size, ours.size));
        }
        if go.sha256 != ours.sha256 {
            return Some("data differs".to_owned());
        }
    }
    if (go.mode as u64 & 0o7777) as u32 != ours.mode {
        return Some(format!("mode: Go {:o}, ours {:o}", go.mode, ours.mode));
    }
    if (go.uid, go.gid) != (i64::from(ours.uid), i64::from(ours.gid)) {
        return Some(format!(
            "owner: Go {}:{}, ours {}:{}",
            go.uid, go.gid, ours.uid, ours.gid
        ));
    }
    if go.mtime != ours.mtime {
        return Some(format!("mtime: Go {:?}, ours {:?}", go.mtime, ours.mtime));
    }
    let go_xattrs: BTreeMap<Vec<u8>, Vec<u8>> = go
        .pax
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(b"SCHILY.xattr.".as_slice())
                .map(|n| (n.to_vec(), v.clone()))
        })
        .collect();
    if go_xattrs != ours.xattrs {
        return Some(format!("xattrs: Go {go_xattrs:?}, ours {:?}", ours.xattrs));
    }
    None
}

/// How one tar compares.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Same,
    /// We refuse an entry Go reads, for a documented reason.
    Refused(&'static str),
    Differs(String),
}

fn compare(go: &GoListing, ours: &OurListing) -> Outcome {
    // Go returns PAX global headers as entries; they are no file, and
    // this reader applies them to nothing.
    let go_entries: Vec<&GoEntry> = go.entries.iter().filter(|e| e.kind != b'g').collect();
    for (i, g) in go_entries.iter().enumerate() {
        match ours.entries.get(i) {
            Some(o) => {
                if let Some(d) = entry_difference(g, o) {
                    return Outcome::Differs(format!("entry {i}: {d}"));
                }
            }
            None => {
                // Go sees some broken data only when it reads it, and the
                // lister does not read data past 256 MiB: it fails at the
                // next header instead.
                let unread = g.sha256.is_none() && go.error.is_some() && i + 1 == go_entries.len();
                return match &ours.error {
                    Some(_) if unread => Outcome::Refused(
                        "broken data of a file of more than 256 MiB (Go fails when it reads it)",
                    ),
                    Some(e) => match documented_refusal(g, e) {
                        Some(why) => Outcome::Refused(why),
                        None => Outcome::Differs(format!(
                            "entry {i} ({:?}): Go reads it, we refuse: {e}",
                            String::from_utf8_lossy(&g.name)
                        )),
                    },
                    None => Outcome::Differs(format!(
                        "entry {i} ({:?}): Go reads it, our archive ends before",
                        String::from_utf8_lossy(&g.name)
                    )),
                };
            }
        }
    }
    if ours.entries.len() > go_entries.len() {
        return Outcome::Differs(format!(
            "we read {} entries, Go {} (then {})",
            ours.entries.len(),
            go_entries.len(),
            go.error.as_deref().unwrap_or("the end")
        ));
    }
    match (&go.error, &ours.error) {
        (None, None) | (Some(_), Some(_)) => Outcome::Same,
        (Some(g), None) => Outcome::Differs(format!("Go fails ({g}), we end cleanly")),
        (None, Some(e)) => Outcome::Differs(format!("Go ends cleanly, we fail: {e}")),
    }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tar_corpus");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/tar_corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read corpus tar"))
        })
        .collect();
    out.sort();
    out
}

/// A small deterministic generator (xorshift64*), so a failing run
/// reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn checksum_ok(block: &[u8]) -> bool {
    let stored = std::str::from_utf8(&block[148..155])
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim_matches(|c| c == ' ' || c == '\0'), 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

fn fix_checksum(block: &mut [u8]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A numeric field's new bytes: octal with odd padding, base-256, NULs,
/// or garbage.
fn numeric(rng: &mut Rng, width: usize) -> Vec<u8> {
    let mut f = vec![0u8; width];
    match rng.below(7) {
        0 => {
            let v = rng.next() % [8, 4096, 1 << 20, 1 << 33][rng.below(4)];
            let s = format!("{v:o}");
            let start = rng.below(width.saturating_sub(s.len()).max(1));
            let fill = *rng.pick(&[b' ', b'0', 0]);
            f.iter_mut().take(start).for_each(|b| *b = fill);
            f[start..(start + s.len()).min(width)]
                .copy_from_slice(&s.as_bytes()[..s.len().min(width - start)]);
        }
        1 => {
            let v = (rng.next() % (1 << 40)) as i64 * if rng.below(2) == 0 { 1 } else { -1 };
            let bytes = v.to_be_bytes();
            let w = width.min(8);
            f[width - w..].copy_from_slice(&bytes[8 - w..]);
            if v < 0 {
                f.iter_mut().take(width - w).for_each(|b| *b = 0xff);
            }
            f[0] = if v < 0 { 0xff } else { 0x80 };
        }
        2 => {}
        3 => f.iter_mut().for_each(|b| *b = b' '),
        4 => f = b"0000000000000000000"[..width].to_vec(),
        5 => {
            let i = rng.below(width);
            f = format!("{:0w$o}", rng.next() % 512, w = width - 1).into_bytes();
            f.push(0);
            f[i] = *rng.pick(&[b'8', b'-', b'+', 0x80, b'x', 0]);
        }
        _ => f[0] = *rng.pick(&[0x80u8, 0xc0, 0xff, 0x7f]),
    }
    f
}

/// A tar made from `tar` by a few header mutations.
fn mutate(rng: &mut Rng, tar: &[u8]) -> Vec<u8> {
    let mut out = tar.to_vec();
    let headers: Vec<usize> = (0..out.len() / 512)
        .map(|i| i * 512)
        .filter(|&at| checksum_ok(&out[at..at + 512]))
        .collect();
    for _ in 0..1 + rng.below(3) {
        if headers.is_empty() || out.len() < 512 {
            break;
        }
        let at = *rng.pick(&headers);
        if at + 512 > out.len() {
            continue;
        }
        let h = &mut out[at..at + 512];
        let fields: [(usize, usize); 7] = [
            (100, 8),
            (108, 8),
            (116, 8),
            (124, 12),
            (136, 12),
            (329, 8),
            (337, 8),
        ];
        match rng.below(10) {
            0..=2 => {
                let (start, width) = *rng.pick(&fields);
                let f = numeric(rng, width);
                h[start..start + width].copy_from_slice(&f);
            }
            3 => h[156] = *rng.pick(b"0123456789xgLKSVMDA\0"),
            4 => {
                const MAGICS: [(&[u8; 6], &[u8; 2]); 5] = [
                    (b"ustar\0", b"00"),
                    (b"ustar\0", b" \0"),
                    (b"ustar ", b" \0"),
                    (b"\0\0\0\0\0\0", b"\0\0"),
                    (b"ustar ", b"00"),
                ];
                let (magic, version) = MAGICS[rng.below(MAGICS.len())];
                h[257..263].copy_from_slice(magic);
                h[263..265].copy_from_slice(version);
                if rng.below(4) == 0 {
                    h[508..512].copy_from_slice(b"tar\0");
                }
            }
            5 => {
                const PREFIXES: [&[u8]; 5] = [b"pre/fix", b"../up", b"\xffbad", b"", b"a\0b"];
                let prefix = PREFIXES[rng.below(PREFIXES.len())];
                h[345..500].fill(0);
                h[345..345 + prefix.len()].copy_from_slice(prefix);
            }
            6 => {
                const NAMES: [&[u8]; 10] = [
                    b"dir/",
                    b"../x",
                    b"/abs",
                    b"a/./b",
                    b"",
                    b"\xc3(",
                    b".wh.x",
                    b"x\ny",
                    b"./",
                    b"d/.wh..wh..opq",
                ];
                let name = NAMES[rng.below(NAMES.len())];
                h[..100].fill(0);
                h[..name.len()].copy_from_slice(name);
            }
            7 => {
                let i = rng.below(512);
                h[i] = (rng.next() & 0xff) as u8;
            }
            8 => {
                // A byte of the data after the header (a PAX record, a
                // sparse map, a long name).
                let i = at + 512 + rng.below(512);
                if i < out.len() {
                    out[i] = *rng.pick(b"0123456789 =\n\0,x.-+");
                }
                continue;
            }
            _ => {
                let cut = rng.below(out.len());
                out.truncate(cut);
                return out;
            }
        }
        if rng.below(10) != 0 {
            fix_checksum(&mut out[at..at + 512]);
        }
    }
    out
}

#[test]
fn the_reader_reads_what_go_archive_tar_reads() {
    let test = "the_reader_reads_what_go_archive_tar_reads";
    let Some(lister) = lister(test) else {
        return;
    };
    let mutants: usize = std::env::var("LAYERSTACK_TAR_DIFF_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("LAYERSTACK_TAR_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1a7e_7a12);
    let scratch = Scratch::new("tar-diff");
    let corpus = corpus();
    assert!(corpus.len() >= 40, "the corpus is missing");
    let mut tars: Vec<(String, Vec<u8>)> = corpus.clone();
    let mut rng = Rng(seed);
    for i in 0..mutants {
        let (name, base) = rng.pick(&corpus);
        tars.push((format!("mutant-{i}-of-{name}"), mutate(&mut rng, base)));
    }
    let files: Vec<PathBuf> = tars
        .iter()
        .enumerate()
        .map(|(i, (_, bytes))| {
            let path = scratch.path(&format!("{i}.tar")).into_std_path_buf();
            std::fs::write(&path, bytes).expect("write tar");
            path
        })
        .collect();
    let listings = go_list(&lister, &files);

    let mut same = 0;
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    let mut differences = Vec::new();
    for ((name, bytes), go) in tars.iter().zip(&listings) {
        match compare(go, &our_list(bytes)) {
            Outcome::Same => same += 1,
            Outcome::Refused(why) => *refused.entry(why).or_default() += 1,
            Outcome::Differs(d) => differences.push((name.clone(), bytes.clone(), d)),
        }
    }
    eprintln!(
        "tar differential: {} tars ({} corpus, {mutants} mutants, seed {seed}): {same} read alike, {} refused for documented reasons, {} differ",
        tars.len(),
        corpus.len(),
        refused.values().sum::<usize>(),
        differences.len()
    );
    for (why, n) in &refused {
        eprintln!("  refused ({n}): {why}");
    }
    if !differences.is_empty() {
        let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tar-diff-failures");
        let _ = std::fs::create_dir_all(&keep);
        let report: Vec<String> = differences
            .iter()
            .map(|(name, bytes, d)| {
                let _ = std::fs::write(keep.join(name), bytes);
                format!("{name}: {d}")
            })
            .collect();
        panic!(
            "{} tars read differently from Go (kept in {}):\n{}",
            report.len(),
            keep.display(),
            report
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Every corpus tar Go reads whole, this reader reads whole too: the
/// corpus itself carries no refusal.
#[test]
fn the_corpus_reads_alike_in_go_and_here() {
    let Some(lister) = lister("the_corpus_reads_alike_in_go_and_here") else {
        return;
    };
    let corpus = corpus();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tar_corpus");
    let files: Vec<PathBuf> = corpus.iter().map(|(n, _)| dir.join(n)).collect();
    let listings = go_list(&lister, &files);
    for ((name, bytes), go) in corpus.iter().zip(&listings) {
        assert_eq!(compare(go, &our_list(bytes)), Outcome::Same, "{name}");
    }
}
