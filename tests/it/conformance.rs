//! The layer conformance suite (`layerstack::testing`) run on a layer
//! implemented outside the crate, on `MemLayer`, and on deliberately broken
//! layers it must catch.

use std::collections::BTreeMap;

use bytes::Bytes;
use layerstack::layer::Redirect;
use layerstack::testing::{
    LayerItem, Nonconformance, build_layer, check_layer_conformance, layer_items_strategy,
};
use layerstack::{
    Content, DirListing, Entry, EntryKind, Error, ErrorKind, FileType, Layer, LayerMut, LayerPath,
    MemLayer, Metadata, NameBuf, Operation, Result, Spill, Timestamp, makedev,
};
use proptest::prelude::*;

fn temp_dir() -> camino::Utf8PathBuf {
    camino::Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("UTF-8 temp dir")
}

/// What [`MapLayer`] stores at one path.
#[derive(Debug, Clone)]
struct Stored {
    entry: Entry,
    data: Bytes,
    target: NameBuf,
}

/// A read-only layer kept as a flat map from path to entry, as a third
/// party (a tar index, a remote store) would write one. Inode numbers are
/// its own, not the source's.
#[derive(Debug, Clone, Default)]
struct MapLayer {
    entries: BTreeMap<LayerPath, Stored>,
}

fn err(kind: ErrorKind, path: &LayerPath) -> Error {
    Error::new(kind, Operation::Layer, path)
}

impl MapLayer {
    /// Copies everything `src` holds, through the `Layer` API alone.
    fn copy_of(src: &dyn Layer) -> MapLayer {
        let mut layer = MapLayer::default();
        let mut inos = BTreeMap::new();
        let mut pending = vec![LayerPath::root()];
        while let Some(path) = pending.pop() {
            let mut entry = src.lookup(&path).unwrap().expect("listed paths exist");
            let (mut data, mut target) = (Bytes::new(), NameBuf::new());
            if let Entry::Node(node) = &mut entry {
                // Number inodes differently from the source: only
                // consistency is required.
                let next = 1000 + inos.len() as u64 * 7;
                node.meta.ino = *inos.entry(node.meta.ino).or_insert(next);
                match node.meta.file_type {
                    FileType::Dir => {
                        for (name, _) in src.read_dir(&path).unwrap().entries {
                            pending.push(path.join(&name).unwrap());
                        }
                    }
                    FileType::File => data = src.read_at(&path, 0, usize::MAX).unwrap(),
                    FileType::Symlink => target = src.read_link(&path).unwrap(),
                    _ => {}
                }
            }
            layer.entries.insert(
                path,
                Stored {
                    entry,
                    data,
                    target,
                },
            );
        }
        layer
    }

    fn node(&self, path: &LayerPath) -> Result<(&layerstack::Node, &Stored)> {
        match self.entries.get(path) {
            Some(
                stored @ Stored {
                    entry: Entry::Node(node),
                    ..
                },
            ) => Ok((node, stored)),
            _ => Err(err(ErrorKind::NotFound, path)),
        }
    }

    fn children(&self, dir: &LayerPath) -> impl Iterator<Item = (&LayerPath, &Stored)> {
        self.entries
            .range(dir.clone()..)
            .skip(1)
            .take_while(move |(p, _)| p.starts_with(dir))
            .filter(move |(p, _)| p.parent().as_ref() == Some(dir))
    }
}

impl Layer for MapLayer {
    fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
        Ok(self.entries.get(path).map(|s| s.entry.clone()))
    }

    fn read_dir(&self, path: &LayerPath) -> Result<DirListing> {
        let (node, _) = self.node(path)?;
        if node.meta.file_type != FileType::Dir {
            return Err(err(ErrorKind::NotADirectory, path));
        }
        let entries = self
            .children(path)
            .map(|(p, s)| {
                let kind = match &s.entry {
                    Entry::Whiteout => EntryKind::Whiteout,
                    Entry::Node(n) => EntryKind::Node(n.meta.file_type),
                };
                (p.file_name().unwrap().to_owned(), kind)
            })
            .collect();
        Ok(DirListing {
            opaque: node.opaque,
            entries,
        })
    }

    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes> {
        let (node, stored) = self.node(path)?;
        match node.meta.file_type {
            FileType::File => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(stored.data.len());
                let end = start.saturating_add(len).min(stored.data.len());
                Ok(stored.data.slice(start..end))
            }
            FileType::Dir => Err(err(ErrorKind::IsADirectory, path)),
            _ => Err(err(ErrorKind::InvalidInput, path)),
        }
    }

    fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
        let (node, stored) = self.node(path)?;
        match node.meta.file_type {
            FileType::Symlink => Ok(stored.target.clone()),
            _ => Err(err(ErrorKind::InvalidInput, path)),
        }
    }
}

/// One thing a broken layer gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `lookup` of a whiteout answers "nothing".
    WhiteoutsMissingFromLookup,
    /// Directory listings leave whiteouts out.
    WhiteoutsMissingFromListings,
    /// Every name gets its own inode number, hard links too.
    HardLinksSplit,
    /// Every object has inode number 1.
    OneInode,
    /// `read_dir` of a non-directory says `ENOENT`.
    WrongErrorForReadDirOfNonDirectory,
    /// `read_at` returns at most 2 bytes.
    ShortReads,
    /// The opaque flag is lost in `lookup`.
    OpaqueLost,
}

#[derive(Debug)]
struct Broken {
    inner: MapLayer,
    fault: Fault,
}

impl Layer for Broken {
    fn lookup(&self, path: &LayerPath) -> Result<Option<Entry>> {
        let entry = self.inner.lookup(path)?;
        Ok(match (self.fault, entry) {
            (Fault::WhiteoutsMissingFromLookup, Some(Entry::Whiteout)) => None,
            (Fault::HardLinksSplit, Some(Entry::Node(mut n))) => {
                let index = self.inner.entries.keys().position(|p| p == path);
                n.meta.ino = 10_000 + index.expect("the path exists") as u64;
                Some(Entry::Node(n))
            }
            (Fault::OneInode, Some(Entry::Node(mut n))) => {
                n.meta.ino = 1;
                Some(Entry::Node(n))
            }
            (Fault::OpaqueLost, Some(Entry::Node(mut n))) => {
                n.opaque = false;
                Some(Entry::Node(n))
            }
            (_, e) => e,
        })
    }

    fn read_dir(&self, path: &LayerPath) -> Result<DirListing> {
        match self.inner.read_dir(path) {
            Ok(mut listing) if self.fault == Fault::WhiteoutsMissingFromListings => {
                listing.entries.retain(|(_, k)| *k != EntryKind::Whiteout);
                Ok(listing)
            }
            Err(e)
                if self.fault == Fault::WrongErrorForReadDirOfNonDirectory
                    && e.kind() == ErrorKind::NotADirectory =>
            {
                Err(err(ErrorKind::NotFound, path))
            }
            r => r,
        }
    }

    fn read_at(&self, path: &LayerPath, offset: u64, len: usize) -> Result<Bytes> {
        let len = if self.fault == Fault::ShortReads {
            len.min(2)
        } else {
            len
        };
        self.inner.read_at(path, offset, len)
    }

    fn read_link(&self, path: &LayerPath) -> Result<NameBuf> {
        self.inner.read_link(path)
    }
}

/// A layer with one of everything.
fn fixed_layer() -> MemLayer {
    let mut l = MemLayer::new();
    let t = Timestamp::new(1_700_000_000, 5);
    l.add_dir_with(
        "etc",
        Metadata::new(FileType::Dir)
            .with_mode(0o2775)
            .with_owner(0, 50),
    )
    .unwrap();
    l.add_file_with(
        "etc/hostname",
        "box\n",
        Metadata::new(FileType::File)
            .with_mode(0o640)
            .with_owner(1000, 1000)
            .with_times(t),
    )
    .unwrap();
    l.add_file("etc/large", vec![7u8; 10_000]).unwrap();
    l.add_file("etc/empty", "").unwrap();
    l.add_hard_link("etc/hostname", "etc/hostname.bak").unwrap();
    l.add_hard_link("etc/hostname", "root-hostname").unwrap();
    l.add_whiteout("etc/motd").unwrap();
    l.add_symlink("bin", "usr/bin").unwrap();
    l.add_symlink("loop", "loop").unwrap();
    l.add_symlink("abs", "/etc/../etc/hostname").unwrap();
    l.add_symlink("usr/dangling", "../nowhere").unwrap();
    l.add_opaque_dir("var/cache").unwrap();
    l.set_redirect(
        &LayerPath::new("var/cache").unwrap(),
        Some(Redirect::parse("/old/cache")),
    )
    .unwrap();
    l.add_dir("var/renamed").unwrap();
    l.set_redirect(
        &LayerPath::new("var/renamed").unwrap(),
        Some(Redirect::parse("orig")),
    )
    .unwrap();
    l.add_special(
        "dev/null",
        Metadata::new(FileType::CharDevice).with_rdev(makedev(1, 3)),
    )
    .unwrap();
    l.add_special(
        "dev/sda1",
        Metadata::new(FileType::BlockDevice).with_rdev(makedev(8, 1)),
    )
    .unwrap();
    l.add_special("run/fifo", Metadata::new(FileType::Fifo))
        .unwrap();
    l.add_special("run/sock", Metadata::new(FileType::Socket))
        .unwrap();
    l.add_whiteout("run/gone").unwrap();
    // Names and a symlink target that are not UTF-8 (Latin-1, KOI8-R,
    // EUC-JP): stored and listed byte for byte.
    l.add_file(b"srv/caf\xe9", "latin-1 name").unwrap();
    l.add_symlink(b"srv/\xd0\xd2\xc9\xd7\xc5\xd4", b"caf\xe9")
        .unwrap();
    l.add_whiteout(b"srv/\xc6\xfc\xcb\xdc").unwrap();
    l.add_dir(b"srv/\xc6\xfc").unwrap();
    let path = LayerPath::new("etc/hostname").unwrap();
    let mut meta = l
        .lookup(&path)
        .unwrap()
        .unwrap()
        .node()
        .unwrap()
        .meta
        .clone();
    meta.xattrs.insert("user.x", "1");
    meta.xattrs
        .insert("trusted.y", Bytes::from_static(b"\0\xff"));
    l.set_metadata(&path, &meta).unwrap();
    l
}

/// Copies a layer into a fresh `MemLayer` through the `LayerMut` calls a
/// view makes (create, whiteout, opaque, redirect, hard_link, metadata).
fn rebuilt_through_layer_mut(src: &MemLayer) -> MemLayer {
    rebuilt_through_layer_mut_into(src, MemLayer::new())
}

/// As [`rebuilt_through_layer_mut`], into `out` (an empty layer).
fn rebuilt_through_layer_mut_into(src: &MemLayer, mut out: MemLayer) -> MemLayer {
    let mut first_name: BTreeMap<u64, LayerPath> = BTreeMap::new();
    let mut pending = vec![LayerPath::root()];
    while let Some(path) = pending.pop() {
        match src.lookup(&path).unwrap().unwrap() {
            Entry::Whiteout => out.whiteout(&path).unwrap(),
            Entry::Node(node) => {
                let meta = &node.meta;
                if let Some(existing) = first_name.get(&meta.ino) {
                    out.hard_link(existing, &path).unwrap();
                    continue;
                }
                first_name.insert(meta.ino, path.clone());
                match meta.file_type {
                    FileType::Dir => {
                        if path.is_root() {
                            out.set_metadata(&path, meta).unwrap();
                        } else {
                            out.create(&path, meta, Content::Dir).unwrap();
                        }
                        out.set_opaque(&path, node.opaque).unwrap();
                        out.set_redirect(&path, node.redirect.clone()).unwrap();
                        // Children in reverse, so the stack pops them in
                        // order (the first name of an inode is the first
                        // in a depth-first walk, as the suite walks).
                        let mut names = src.read_dir(&path).unwrap().entries;
                        names.reverse();
                        for (name, _) in names {
                            pending.push(path.join(&name).unwrap());
                        }
                    }
                    FileType::File => {
                        out.copy_file(&path, meta, src, &path).unwrap();
                    }
                    FileType::Symlink => {
                        let target = src.read_link(&path).unwrap();
                        out.create(&path, meta, Content::Symlink(target)).unwrap();
                    }
                    _ => out.create(&path, meta, Content::Special).unwrap(),
                }
            }
        }
    }
    out
}

fn check(layer: &dyn Layer, expected: &MemLayer) -> std::result::Result<(), TestCaseError> {
    check_layer_conformance(layer, expected).map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_third_party_layer_conforms(items in layer_items_strategy()) {
        let reference = build_layer(&items);
        check(&MapLayer::copy_of(&reference), &reference)?;
    }

    #[test]
    fn mem_layer_conforms(items in layer_items_strategy()) {
        let reference = build_layer(&items);
        check(&reference, &reference.clone())?;
        check(&rebuilt_through_layer_mut(&reference), &reference)?;
    }

    /// A layer whose file data is all in a spill file reads as one in
    /// memory.
    #[test]
    fn mem_layer_with_all_data_spilled_conforms(items in layer_items_strategy()) {
        let reference = build_layer(&items);
        let spill = Spill::new(temp_dir(), 0);
        let mut spilled = rebuilt_through_layer_mut_into(&reference, MemLayer::with_spill(spill));
        check(&spilled, &reference)?;
        // Files created with their data (not written) are spilled too.
        let copy = spilled.clone();
        for (path, entry) in layerstack::layer::walk(&copy).unwrap() {
            if let Entry::Node(node) = entry
                && node.meta.is_file()
                && node.meta.nlink == 1
            {
                let data = copy.file_data(&path).unwrap();
                spilled.remove(&path).unwrap();
                spilled.create(&path, &node.meta, Content::File(data)).unwrap();
            }
        }
        check(&spilled, &reference)?;
    }
}

#[test]
fn fixed_layer_conforms_in_every_implementation() {
    let reference = fixed_layer();
    check_layer_conformance(&reference, &reference.clone()).unwrap();
    check_layer_conformance(&MapLayer::copy_of(&reference), &reference).unwrap();
    check_layer_conformance(&rebuilt_through_layer_mut(&reference), &reference).unwrap();
}

fn broken(fault: Fault) -> Nonconformance {
    let reference = fixed_layer();
    let layer = Broken {
        inner: MapLayer::copy_of(&reference),
        fault,
    };
    check_layer_conformance(&layer, &reference).expect_err("the fault must be caught")
}

#[test]
fn a_layer_that_forgets_whiteouts_in_lookup_is_caught_at_the_whiteout() {
    let e = broken(Fault::WhiteoutsMissingFromLookup);
    assert_eq!(
        e.to_string(),
        "lookup of `etc/motd`: expected a whiteout, got nothing"
    );
}

#[test]
fn a_layer_that_forgets_whiteouts_in_listings_is_caught_at_the_directory() {
    let e = broken(Fault::WhiteoutsMissingFromListings);
    assert_eq!(
        (e.path.to_str().unwrap(), e.call.as_str()),
        ("etc", "read_dir")
    );
    assert!(e.expected.contains("(\"motd\", Whiteout)"), "{e}");
    assert!(!e.got.contains("motd"), "{e}");
}

#[test]
fn a_layer_that_splits_hard_links_is_caught_at_the_second_name() {
    let e = broken(Fault::HardLinksSplit);
    assert_eq!(e.path.to_str().unwrap(), "etc/hostname.bak");
    assert_eq!(e.call, "lookup (ino: names of one inode share it)");
}

#[test]
fn a_layer_that_reuses_one_inode_number_is_caught() {
    let e = broken(Fault::OneInode);
    // The root takes ino 1 first; its first child with another inode fails.
    assert_eq!(e.path.to_str().unwrap(), "abs");
    assert_eq!(e.call, "lookup (ino: distinct inodes differ)");
}

#[test]
fn a_layer_with_the_wrong_error_kind_is_caught() {
    let e = broken(Fault::WrongErrorForReadDirOfNonDirectory);
    assert_eq!(e.path.to_str().unwrap(), "abs");
    assert_eq!(e.call, "read_dir");
    assert_eq!(e.expected, "ENOTDIR");
    assert!(e.got.starts_with("ENOENT"), "{e}");
}

#[test]
fn a_layer_with_short_reads_is_caught() {
    let e = broken(Fault::ShortReads);
    assert_eq!(
        e.to_string(),
        "read_at(0, 5) of `etc/hostname`: expected Ok(b\"box\\n\"), got Ok(b\"bo\")"
    );
}

#[test]
fn a_layer_that_loses_the_opaque_flag_is_caught() {
    let e = broken(Fault::OpaqueLost);
    assert_eq!(
        e.to_string(),
        "lookup (opaque) of `var/cache`: expected true, got false"
    );
}

#[test]
fn generated_items_that_cannot_be_added_are_skipped() {
    let layer = build_layer(&[
        LayerItem::Symlink {
            path: "a".into(),
            target: "a".into(),
        },
        LayerItem::HardLink {
            existing: "b".into(),
            new: "c".into(),
        },
        LayerItem::Whiteout { path: "a/b".into() },
    ]);
    let listing = layer.read_dir(&LayerPath::root()).unwrap();
    assert_eq!(
        listing.entries,
        vec![(NameBuf::from("a"), EntryKind::Node(FileType::Symlink))]
    );
}
