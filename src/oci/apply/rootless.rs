use std::collections::BTreeMap;
use std::io::Read;

use camino::{Utf8Path, Utf8PathBuf};
use rustix::fs::{Mode, OFlags};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::meta::{FileType, MODE_MASK, Metadata, Timestamp, Xattrs, major, makedev, minor};
use crate::oci::apply::applier::type_name as described;
use crate::oci::apply::commit::{keep_xattr, kept_xattrs, unpacked_objects};
use crate::oci::tar::whiteout::is_reserved;
use crate::path::{LayerPath, Name, NameBuf};
use crate::view::MergedView;

/// What [`metadata_path`] appends to the tree's name.
pub const METADATA_SUFFIX: &str = ".layerstack-rootless.json";

/// The field that names the format, with its version.
const FORMAT: &str = "layerstack-rootless";
const VERSION: u64 = 1;
/// The largest map read.
const MAX_BYTES: u64 = 256 << 20;

/// An inode on disk: number and birth time (where the filesystem keeps
/// one). A rename keeps it; a new object has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Identity {
    pub(crate) ino: u64,
    pub(crate) btime: Option<Timestamp>,
}

/// Owner and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attrs {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// An object the unpack wrote with other attributes than the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    id: Identity,
    /// The image's owner and mode.
    image: Attrs,
    /// What the unpack gave it.
    unpacked: Attrs,
    /// The image's extended attributes the unpack could not set.
    xattrs: Xattrs,
}

/// An object of the image the unpack could not make (a device node).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Absent {
    /// The directory it belongs in, as the unpack made it.
    parent: Identity,
    meta: Metadata,
    /// The image's inode number, for names of one inode.
    link: Option<u64>,
}

/// What a rootless unpack of an image could not write into a tree, and
/// how to map it back (see the [module documentation](RootlessMap)).
///
/// What a rootless unpack could not write, kept beside the tree it wrote
/// and mapped back when the tree is committed — what `umoci unpack
/// --rootless` keeps (in `user.rootlesscontainers` xattrs and its uid map)
/// for `umoci repack`.
///
/// A user without root cannot give files other owners, make device
/// nodes, or set `trusted.*` and `security.*` extended attributes. A
/// rootless unpack (the tool's `unpack --rootless`, automatic without
/// root) leaves all files owned by the user, skips device nodes and
/// privileged xattrs, and then records, with [`RootlessMap::record`], every
/// difference between the tree it wrote and the image. Commit
/// ([`layer_from_rootless_dir`](crate::oci::apply::commit::layer_from_rootless_dir))
/// maps them back, so an unchanged tree commits as an empty layer and an
/// edit commits as exactly that edit.
///
/// # The rules
///
/// The unpacking user plays the image's root, as in a rootless container
/// (umoci's default map is the same).
///
/// - An object the map records is known by its path *and* its inode
///   (number and birth time): an object edited in place (written,
///   truncated, `chmod`-ed, renamed over nothing) is still that object; an
///   object replaced by a new one (deleted and created again, or an editor
///   that writes a copy and renames it over) is not.
/// - For a recorded object: its owner is the image's while it still has
///   the owner the unpack gave it, its mode is the image's while it still
///   has the mode the unpack gave it (a user's `chmod` wins), and the
///   image's privileged extended attributes are added where the object
///   has none of that name.
/// - Any other object (not recorded, or replaced): the unpacking user's
///   uid and gid read as 0 (root of the image); other owners stay.
/// - A device node the unpack skipped exists, with the image's
///   attributes, while its directory is still the directory the unpack
///   made and nothing else took its name. It goes away with its directory
///   (deleting the directory deletes it); a file created at its name
///   replaces it.
///
/// # The file
///
/// The map lives beside the tree, never inside it: `DIR` has its map in
/// `DIR.layerstack-rootless.json` ([`metadata_path`]). Inside, it would be
/// a name the image could hold too, a file a container would see and one
/// every walk would have to skip; beside it, the tree is exactly the
/// image's. Moving the tree (rename) keeps the inodes but not the map's
/// name: move both. Copying the tree makes new inodes: its owners are then
/// all root's.
///
/// JSON, version 1 (modes are octal strings, times `[seconds,
/// nanoseconds]`, extended attribute values hex, paths absolute in the
/// tree):
///
/// ```json
/// {
///   "layerstack-rootless": 1,
///   "image": "sha256:…",
///   "user": { "uid": 1001, "gid": 1001 },
///   "root": { "ino": 1234, "btime": [1700000000, 5] },
///   "objects": [
///     { "path": "/etc/app.conf", "ino": 1240, "btime": [1700000000, 9],
///       "uid": 1000, "gid": 1000, "mode": "0644",
///       "unpacked": { "uid": 1001, "gid": 1001, "mode": "0644" },
///       "xattrs": { "trusted.note": "6869" } }
///   ],
///   "absent": [
///     { "path": "/dev/null", "parent": { "ino": 1250, "btime": [1700000000, 7] },
///       "type": "char", "mode": "0666", "uid": 0, "gid": 0, "rdev": [1, 3],
///       "mtime": [1700000000, 0] }
///   ]
/// }
/// ```
///
/// `btime` is `null` where the filesystem keeps no birth time; an inode
/// number reused at the same path is then taken for the old object.
/// `image` is informational. `xattrs` and, in `absent`, `link` (the
/// image's inode number, shared by names of one device inode) are
/// optional.
///
/// # Security
///
/// The file is untrusted input: anything that is not exactly the format
/// above is refused with one error naming the file and the entry
/// (unknown fields, a newer version, a path with `..` or a name starting
/// `.wh.`, a duplicate path, an out-of-range number, an extended attribute
/// a layer does not keep). It is read without following a symlink, only
/// if it is a regular file of at most 256 MiB. The map never leads the
/// commit anywhere: the walk goes where the tree goes and only *looks up*
/// what the map says about each object it meets, so no entry of the map
/// can make a commit read anything outside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootlessMap {
    uid: u32,
    gid: u32,
    root: Identity,
    image: Option<String>,
    kept: BTreeMap<LayerPath, Kept>,
    /// By parent directory, then name.
    absent: BTreeMap<LayerPath, BTreeMap<NameBuf, Absent>>,
    /// The file it was read from, for errors.
    source: Option<Utf8PathBuf>,
}

/// Where the map of the tree `dir` lives: `DIR.layerstack-rootless.json`
/// beside it (`dir` is made absolute first if it has no final name, as
/// `.`).
///
/// # Errors
/// `EINVAL` for `/`, which has nothing beside it; the errors of
/// resolving `dir` when it has no final name.
pub fn metadata_path(dir: &Utf8Path) -> Result<Utf8PathBuf> {
    let dir = if dir.file_name().is_some() {
        dir.to_owned()
    } else {
        let real =
            std::fs::canonicalize(dir).map_err(|e| Error::from_io(&e, Operation::Lookup, dir))?;
        Utf8PathBuf::from_path_buf(real).map_err(|_| {
            Error::new(ErrorKind::InvalidInput, Operation::Lookup, dir)
                .with_detail("its absolute path is not UTF-8")
        })?
    };
    let (Some(name), Some(parent)) = (dir.file_name(), dir.parent()) else {
        return Err(
            Error::new(ErrorKind::InvalidInput, Operation::Lookup, &dir).with_detail(
                "a rootless tree keeps its metadata beside it, and `/` has nothing beside it",
            ),
        );
    };
    Ok(parent.join(format!("{name}{METADATA_SUFFIX}")))
}

impl RootlessMap {
    /// Compares the tree `dir`, just written by a rootless unpack, with
    /// the image it was unpacked from (`image`, a view of its layers), and
    /// records every difference: owners, modes and extended attributes the
    /// unpack could not give, objects it could not make. The unpacking
    /// user is the calling one.
    ///
    /// The tree's attributes are read (and the image's), not its contents.
    ///
    /// # Errors
    /// Errors reading `dir` or `image` (as
    /// [`layer_from_dir`](crate::oci::apply::commit::layer_from_dir)); `EBADMSG` if the
    /// tree is not what an unpack of `image` writes (an object of another
    /// type, a file or directory missing).
    pub fn record(image: &MergedView, dir: &Utf8Path) -> Result<RootlessMap> {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let objects = unpacked_objects(image, dir)?;
        let mut map = RootlessMap {
            uid,
            gid,
            root: objects.first().map_or_else(Identity::default, |o| o.parent),
            image: None,
            kept: BTreeMap::new(),
            absent: BTreeMap::new(),
            source: None,
        };
        let unlike = |path: &LayerPath, why: String| {
            let mut shown = dir.as_str().as_bytes().to_vec();
            if !path.is_root() {
                shown.push(b'/');
                shown.extend_from_slice(path.as_bytes());
            }
            Error::new(ErrorKind::InvalidData, Operation::Flatten, shown).with_detail(why)
        };
        for object in objects {
            if object.path.to_str().is_none() {
                return Err(unlike(
                    &object.path,
                    "the name is not UTF-8 (the map is JSON text)".to_owned(),
                ));
            }
            let at: &[u8] = if object.path.is_root() {
                b"/"
            } else {
                object.path.as_bytes()
            };
            let want = match image.symlink_metadata(at) {
                Ok(meta) => meta,
                // Not in the image: the tree's own (nothing to map back).
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match object.disk {
                None => {
                    if !matches!(
                        want.file_type,
                        FileType::CharDevice | FileType::BlockDevice | FileType::Fifo
                    ) {
                        return Err(unlike(
                            &object.path,
                            format!(
                                "the image has a {} here, the tree nothing",
                                described(want.file_type)
                            ),
                        ));
                    }
                    let (Some(parent), Some(name)) =
                        (object.path.parent(), object.path.file_name())
                    else {
                        continue;
                    };
                    let name = name.to_owned();
                    let link = (want.nlink > 1).then_some(want.ino);
                    map.absent.entry(parent).or_default().insert(
                        name,
                        Absent {
                            parent: object.parent,
                            meta: absent_meta(&want),
                            link,
                        },
                    );
                }
                Some((disk, id)) => {
                    if disk.file_type != want.file_type {
                        return Err(unlike(
                            &object.path,
                            format!(
                                "the image has a {} here, the tree a {}",
                                described(want.file_type),
                                described(disk.file_type)
                            ),
                        ));
                    }
                    let unpacked = Attrs {
                        uid: disk.uid,
                        gid: disk.gid,
                        mode: disk.mode,
                    };
                    let image_attrs = Attrs {
                        uid: want.uid,
                        gid: want.gid,
                        mode: if want.is_symlink() {
                            disk.mode
                        } else {
                            want.mode
                        },
                    };
                    let mut xattrs = kept_xattrs(&want.xattrs);
                    xattrs.retain(|name, _| disk.xattrs.get(name).is_none());
                    let as_is = map.map_owner(&disk);
                    let same = (as_is.uid, as_is.gid, disk.mode)
                        == (image_attrs.uid, image_attrs.gid, image_attrs.mode);
                    if !same || !xattrs.is_empty() {
                        map.kept.insert(
                            object.path,
                            Kept {
                                id,
                                image: image_attrs,
                                unpacked,
                                xattrs,
                            },
                        );
                    }
                }
            }
        }
        Ok(map)
    }

    /// Names the image the tree was unpacked from (informational).
    #[must_use]
    pub fn with_image(mut self, image: impl Into<String>) -> RootlessMap {
        self.image = Some(image.into());
        self
    }

    /// The image the tree was unpacked from, if the map names it.
    #[must_use]
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// The unpacking user's uid and gid (root's in the image).
    #[must_use]
    pub fn user(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// How many objects on disk have attributes mapped back.
    #[must_use]
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// How many objects of the image are not on disk (device nodes).
    #[must_use]
    pub fn absent(&self) -> usize {
        self.absent.values().map(BTreeMap::len).sum()
    }

    /// `disk`, the metadata of the object at `path` of identity `id` in
    /// the tree, as the image sees it (the rules of the [module
    /// documentation](RootlessMap)).
    pub(crate) fn map_back(&self, path: &LayerPath, disk: &Metadata, id: Identity) -> Metadata {
        let mut meta = disk.clone();
        let Some(kept) = self.kept.get(path).filter(|k| k.id == id) else {
            let owner = self.map_owner(disk);
            meta.uid = owner.uid;
            meta.gid = owner.gid;
            return meta;
        };
        if (disk.uid, disk.gid) == (kept.unpacked.uid, kept.unpacked.gid) {
            meta.uid = kept.image.uid;
            meta.gid = kept.image.gid;
        } else {
            let owner = self.map_owner(disk);
            meta.uid = owner.uid;
            meta.gid = owner.gid;
        }
        if disk.mode == kept.unpacked.mode {
            meta.mode = kept.image.mode;
        }
        for (name, value) in kept.xattrs.iter() {
            if meta.xattrs.get(name).is_none() {
                meta.xattrs.insert(name, value.clone());
            }
        }
        meta
    }

    /// The owner of `disk` with the unpacking user's ids as root's.
    fn map_owner(&self, disk: &Metadata) -> Attrs {
        Attrs {
            uid: if disk.uid == self.uid { 0 } else { disk.uid },
            gid: if disk.gid == self.gid { 0 } else { disk.gid },
            mode: disk.mode,
        }
    }

    /// The objects the unpack could not make in directory `dir`, while it
    /// is the directory of identity `id` it made: name, metadata, image
    /// inode (for names of one inode).
    pub(crate) fn absent_in(
        &self,
        dir: &LayerPath,
        id: Identity,
    ) -> impl Iterator<Item = (&Name, &Metadata, Option<u64>)> {
        self.absent
            .get(dir)
            .into_iter()
            .flat_map(|names| names.iter())
            .filter(move |(_, a)| a.parent == id)
            .map(|(name, a)| (name.as_name(), &a.meta, a.link))
    }

    /// Refuses a map recorded for another tree than the one whose root
    /// has identity `root`.
    pub(crate) fn check_root(&self, root: Identity, dir: &Utf8Path) -> Result<()> {
        if root == self.root {
            return Ok(());
        }
        let source = self
            .source
            .as_ref()
            .map_or_else(|| "the rootless map".to_owned(), |s| format!("`{s}`"));
        Err(
            Error::new(ErrorKind::InvalidData, Operation::Commit, dir).with_detail(format!(
                "{source} was recorded for another tree (its root is another directory): \
                 remove it to commit the tree as it is, owners and all"
            )),
        )
    }

    /// The map as JSON (the format of the [module documentation](RootlessMap)).
    #[must_use]
    pub fn to_json(&self) -> String {
        let objects: Vec<Value> = self
            .kept
            .iter()
            .map(|(path, k)| {
                let mut o = json!({
                    "path": shown(path),
                    "ino": k.id.ino,
                    "btime": time_json(k.id.btime),
                    "uid": k.image.uid,
                    "gid": k.image.gid,
                    "mode": mode_json(k.image.mode),
                    "unpacked": {
                        "uid": k.unpacked.uid,
                        "gid": k.unpacked.gid,
                        "mode": mode_json(k.unpacked.mode),
                    },
                });
                if !k.xattrs.is_empty() {
                    o["xattrs"] = xattrs_json(&k.xattrs);
                }
                o
            })
            .collect();
        let mut absent = Vec::new();
        for (dir, names) in &self.absent {
            for (name, a) in names {
                let path = dir
                    .join(name)
                    .map_or_else(|_| name.to_string_lossy().into_owned(), |p| shown(&p));
                let m = &a.meta;
                let mut o = json!({
                    "path": path,
                    "parent": identity_json(a.parent),
                    "type": type_name(m.file_type),
                    "mode": mode_json(m.mode),
                    "uid": m.uid,
                    "gid": m.gid,
                    "rdev": [major(m.rdev), minor(m.rdev)],
                    "mtime": time_json(Some(m.mtime)),
                });
                if !m.xattrs.is_empty() {
                    o["xattrs"] = xattrs_json(&m.xattrs);
                }
                if let Some(link) = a.link {
                    o["link"] = json!(link);
                }
                absent.push(o);
            }
        }
        // One line per entry, the header first: easy to read and to diff.
        let line = |v: &Value| serde_json::to_string(v).unwrap_or_default();
        let list = |entries: &[Value]| {
            if entries.is_empty() {
                return "[]".to_owned();
            }
            let lines: Vec<String> = entries.iter().map(|e| format!("    {}", line(e))).collect();
            format!("[\n{}\n  ]", lines.join(",\n"))
        };
        let mut text = format!("{{\n  {}: {VERSION},\n", line(&json!(FORMAT)));
        if let Some(image) = &self.image {
            text += &format!("  \"image\": {},\n", line(&json!(image)));
        }
        text += &format!(
            "  \"user\": {},\n  \"root\": {},\n  \"objects\": {},\n  \"absent\": {}\n}}\n",
            line(&json!({"uid": self.uid, "gid": self.gid})),
            line(&identity_json(self.root)),
            list(&objects),
            list(&absent),
        );
        text
    }

    /// Reads a map from JSON; `source` names it in errors.
    ///
    /// # Errors
    /// `EBADMSG` naming `source` and the entry for anything that is not
    /// the format of the [module documentation](RootlessMap).
    pub fn from_json(text: &[u8], source: &Utf8Path) -> Result<RootlessMap> {
        let bad = |why: String| {
            Error::new(ErrorKind::InvalidData, Operation::Read, source)
                .with_detail(format!("not a rootless map: {why}"))
        };
        let value: Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        let mut top = Fields::new(&value, "the top level".into()).map_err(&bad)?;
        let version = top.u64(FORMAT).map_err(&bad)?;
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, and this layerstack reads version {VERSION}"
            )));
        }
        let image = top.opt_str("image").map_err(&bad)?.map(str::to_owned);
        let mut user = top.object("user").map_err(&bad)?;
        let (uid, gid) = (
            user.u32("uid").map_err(&bad)?,
            user.u32("gid").map_err(&bad)?,
        );
        user.done().map_err(&bad)?;
        let root = identity(top.value("root").map_err(&bad)?, "`root`").map_err(&bad)?;
        let mut map = RootlessMap {
            uid,
            gid,
            root,
            image,
            kept: BTreeMap::new(),
            absent: BTreeMap::new(),
            source: Some(source.to_owned()),
        };
        for (i, entry) in top.array("objects").map_err(&bad)?.iter().enumerate() {
            let (path, kept) = kept_entry(entry, i).map_err(&bad)?;
            if map.kept.insert(path.clone(), kept).is_some() {
                return Err(bad(format!(
                    "objects[{i}]: `{}` is listed twice",
                    shown(&path)
                )));
            }
        }
        for (i, entry) in top.array("absent").map_err(&bad)?.iter().enumerate() {
            let (path, absent) = absent_entry(entry, i).map_err(&bad)?;
            let duplicate = || bad(format!("absent[{i}]: `{}` is listed twice", shown(&path)));
            if map.kept.contains_key(&path) {
                return Err(duplicate());
            }
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(bad(format!("absent[{i}]: the root cannot be absent")));
            };
            let name = name.to_owned();
            if map
                .absent
                .entry(parent)
                .or_default()
                .insert(name, absent)
                .is_some()
            {
                return Err(duplicate());
            }
        }
        top.done().map_err(&bad)?;
        Ok(map)
    }

    /// Reads the map at `path`, if there is one.
    ///
    /// # Errors
    /// `ELOOP` if it is a symlink, `EINVAL` if it is not a regular file,
    /// `EFBIG` if it is larger than 256 MiB; as
    /// [`RootlessMap::from_json`]; errors reading it.
    pub fn read(path: &Utf8Path) -> Result<Option<RootlessMap>> {
        let fd = match rustix::fs::open(
            path.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(Error::new(ErrorKind::FilesystemLoop, Operation::Read, path)
                    .with_detail("it is a symlink (refused: a rootless map is a regular file)"));
            }
            Err(e) => {
                return Err(crate::fs::beneath::errno_error(
                    e,
                    Operation::Read,
                    path.as_str(),
                ));
            }
        };
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| crate::fs::beneath::errno_error(e, Operation::Read, path.as_str()))?;
        if FileType::from_mode(st.st_mode) != Some(FileType::File) {
            return Err(Error::new(ErrorKind::InvalidInput, Operation::Read, path)
                .with_detail("it is not a regular file"));
        }
        let mut text = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::from_io(&e, Operation::Read, path))?;
        if text.len() as u64 > MAX_BYTES {
            return Err(Error::new(ErrorKind::FileTooLarge, Operation::Read, path)
                .with_detail(format!("a rootless map is at most {MAX_BYTES} bytes")));
        }
        RootlessMap::from_json(&text, path).map(Some)
    }

    /// Writes the map to `path`, whole or not at all (a temporary file
    /// beside it, renamed over it).
    ///
    /// # Errors
    /// Errors writing, syncing or renaming the file.
    pub fn write(&self, path: &Utf8Path) -> Result<()> {
        let name = path.file_name().unwrap_or("rootless");
        let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let written = (|| {
            // Left by a run of ours with this pid that was killed (the pid
            // of a container's first process is always the same).
            match std::fs::remove_file(&temp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            std::io::Write::write_all(&mut file, self.to_json().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            Error::from_io(&e, Operation::Write, path)
        })
    }
}

/// The image's metadata of an object the unpack could not make, as a
/// layer keeps it.
fn absent_meta(want: &Metadata) -> Metadata {
    let mut meta = Metadata::new(want.file_type)
        .with_mode(want.mode & MODE_MASK)
        .with_owner(want.uid, want.gid);
    meta.rdev = want.rdev;
    meta.mtime = want.mtime;
    meta.xattrs = kept_xattrs(&want.xattrs);
    meta
}

/// A path as the map's JSON spells it: absolute in the tree. The map
/// records only UTF-8 paths (JSON strings are text), so the lossy form
/// only ever shows a path in a message.
fn shown(path: &LayerPath) -> String {
    format!("/{}", path.as_name().to_string_lossy())
}

fn type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::CharDevice => "char",
        FileType::BlockDevice => "block",
        _ => "fifo",
    }
}

fn mode_json(mode: u32) -> Value {
    json!(format!("{:04o}", mode & MODE_MASK))
}

fn time_json(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!([t.sec, t.nsec]))
}

fn identity_json(id: Identity) -> Value {
    json!({"ino": id.ino, "btime": time_json(id.btime)})
}

fn xattrs_json(xattrs: &Xattrs) -> Value {
    let mut m = Map::new();
    for (name, value) in xattrs.iter() {
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        m.insert(name.to_owned(), json!(hex));
    }
    Value::Object(m)
}

/// The fields of one JSON object, each taken once; [`Fields::done`]
/// refuses any left over.
struct Fields<'v> {
    map: &'v Map<String, Value>,
    taken: Vec<&'static str>,
    what: String,
}

type Parsed<T> = std::result::Result<T, String>;

impl<'v> Fields<'v> {
    fn new(value: &'v Value, what: String) -> Parsed<Fields<'v>> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                taken: Vec::new(),
                what,
            }),
            _ => Err(format!("{what} must be an object")),
        }
    }

    fn opt_value(&mut self, key: &'static str) -> Option<&'v Value> {
        self.taken.push(key);
        self.map.get(key)
    }

    fn value(&mut self, key: &'static str) -> Parsed<&'v Value> {
        self.opt_value(key)
            .ok_or_else(|| format!("{}: `{key}` is missing", self.what))
    }

    fn object(&mut self, key: &'static str) -> Parsed<Fields<'v>> {
        let what = format!("{}: `{key}`", self.what);
        Fields::new(self.value(key)?, what)
    }

    fn array(&mut self, key: &'static str) -> Parsed<&'v Vec<Value>> {
        match self.value(key)? {
            Value::Array(a) => Ok(a),
            _ => Err(format!("{}: `{key}` must be an array", self.what)),
        }
    }

    fn u64(&mut self, key: &'static str) -> Parsed<u64> {
        let v = self.value(key)?;
        v.as_u64()
            .ok_or_else(|| format!("{}: `{key}` must be a whole number ≥ 0", self.what))
    }

    fn u32(&mut self, key: &'static str) -> Parsed<u32> {
        let n = self.u64(key)?;
        u32::try_from(n).map_err(|_| format!("{}: `{key}` is out of range ({n})", self.what))
    }

    fn str(&mut self, key: &'static str) -> Parsed<&'v str> {
        self.value(key)?
            .as_str()
            .ok_or_else(|| format!("{}: `{key}` must be a string", self.what))
    }

    fn opt_str(&mut self, key: &'static str) -> Parsed<Option<&'v str>> {
        match self.opt_value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{}: `{key}` must be a string", self.what)),
        }
    }

    fn mode(&mut self, key: &'static str) -> Parsed<u32> {
        let s = self.str(key)?;
        let ok = !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(s, 8) {
            Ok(mode) if ok => Ok(mode),
            _ => Err(format!(
                "{}: `{key}` must be an octal mode of at most 4 digits, not {s:?}",
                self.what
            )),
        }
    }

    fn path(&mut self) -> Parsed<LayerPath> {
        let s = self.str("path")?;
        let bad = |why: &str| format!("{}: path {s:?} {why}", self.what);
        let rel = s.strip_prefix('/').ok_or_else(|| bad("is not absolute"))?;
        let path =
            LayerPath::new(rel).map_err(|e| bad(&format!("is not valid ({})", e.cause())))?;
        if path.names().any(is_reserved) {
            return Err(bad("has a name starting with `.wh.`"));
        }
        Ok(path)
    }

    fn xattrs(&mut self) -> Parsed<Xattrs> {
        let mut out = Xattrs::new();
        let Some(value) = self.opt_value("xattrs") else {
            return Ok(out);
        };
        let Value::Object(map) = value else {
            return Err(format!("{}: `xattrs` must be an object", self.what));
        };
        for (name, hex) in map {
            let ok_name = crate::meta::check_xattr_name(name, Operation::Read, "").is_ok()
                && keep_xattr(name);
            if !ok_name {
                return Err(format!(
                    "{}: extended attribute {name:?} is not one a layer keeps",
                    self.what
                ));
            }
            let bytes = hex
                .as_str()
                .and_then(from_hex)
                .ok_or_else(|| format!("{}: the value of {name:?} must be hex", self.what))?;
            out.insert(name.clone(), bytes);
        }
        Ok(out)
    }

    fn done(&self) -> Parsed<()> {
        match self.map.keys().find(|k| !self.taken.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(format!("{}: unknown field {k:?}", self.what)),
        }
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    // Only hex digits (`from_str_radix` alone would take a `+`).
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn time(value: &Value, what: &str) -> Parsed<Option<Timestamp>> {
    let bad = || format!("{what} must be [seconds, nanoseconds] or null");
    match value {
        Value::Null => Ok(None),
        Value::Array(a) if a.len() == 2 => {
            let sec = a[0].as_i64().ok_or_else(bad)?;
            let nsec = a[1]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(bad)?;
            Ok(Some(Timestamp::new(sec, nsec)))
        }
        _ => Err(bad()),
    }
}

fn identity(value: &Value, what: &str) -> Parsed<Identity> {
    let mut f = Fields::new(value, what.to_owned())?;
    let ino = f.u64("ino")?;
    let btime = time(f.value("btime")?, &format!("{what}: `btime`"))?;
    f.done()?;
    Ok(Identity { ino, btime })
}

fn kept_entry(value: &Value, i: usize) -> Parsed<(LayerPath, Kept)> {
    let mut f = Fields::new(value, format!("objects[{i}]"))?;
    let path = f.path()?;
    f.what = format!("objects[{i}] ({:?})", shown(&path));
    let ino = f.u64("ino")?;
    let btime = time(f.value("btime")?, &format!("{}: `btime`", f.what))?;
    let image = Attrs {
        uid: f.u32("uid")?,
        gid: f.u32("gid")?,
        mode: f.mode("mode")?,
    };
    let mut u = f.object("unpacked")?;
    let unpacked = Attrs {
        uid: u.u32("uid")?,
        gid: u.u32("gid")?,
        mode: u.mode("mode")?,
    };
    u.done()?;
    let xattrs = f.xattrs()?;
    f.done()?;
    let id = Identity { ino, btime };
    Ok((
        path,
        Kept {
            id,
            image,
            unpacked,
            xattrs,
        },
    ))
}

fn absent_entry(value: &Value, i: usize) -> Parsed<(LayerPath, Absent)> {
    let mut f = Fields::new(value, format!("absent[{i}]"))?;
    let path = f.path()?;
    f.what = format!("absent[{i}] ({:?})", shown(&path));
    let what = f.what.clone();
    let parent = identity(f.value("parent")?, &format!("{what}: `parent`"))?;
    let file_type = match f.str("type")? {
        "char" => FileType::CharDevice,
        "block" => FileType::BlockDevice,
        "fifo" => FileType::Fifo,
        other => {
            return Err(format!(
                "{what}: type {other:?} is not one an unpack skips (char, block, fifo)"
            ));
        }
    };
    let mode = f.mode("mode")?;
    let (uid, gid) = (f.u32("uid")?, f.u32("gid")?);
    let rdev = match f.value("rdev")? {
        Value::Array(a) if a.len() == 2 => {
            let part = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
            match (part(&a[0]), part(&a[1])) {
                (Some(ma), Some(mi)) => makedev(ma, mi),
                _ => return Err(format!("{what}: `rdev` must be [major, minor]")),
            }
        }
        _ => return Err(format!("{what}: `rdev` must be [major, minor]")),
    };
    if file_type == FileType::Fifo && rdev != 0 {
        return Err(format!("{what}: a fifo has no device number"));
    }
    if file_type == FileType::CharDevice && rdev == 0 {
        return Err(format!(
            "{what}: a character device 0:0 is a whiteout, not a device"
        ));
    }
    let mtime = time(f.value("mtime")?, &format!("{what}: `mtime`"))?
        .ok_or_else(|| format!("{what}: `mtime` must be [seconds, nanoseconds]"))?;
    let xattrs = f.xattrs()?;
    let link = match f.opt_value("link") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("{what}: `link` must be a whole number ≥ 0"))?,
        ),
    };
    f.done()?;
    let mut meta = Metadata::new(file_type)
        .with_mode(mode)
        .with_owner(uid, gid);
    meta.rdev = rdev;
    meta.mtime = mtime;
    meta.xattrs = xattrs;
    Ok((path, Absent { parent, meta, link }))
}

#[cfg(test)]
mod tests;
