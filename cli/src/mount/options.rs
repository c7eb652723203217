//! The `-o` options of `layerstack mount`, read as the kernel's overlayfs
//! reads its mount data: options split at commas, `lowerdir=` split at
//! colons (leftmost is the top layer), and a backslash taking the next
//! character literally (`\,` and `\:` in a path), as `mount -t overlay`
//! takes them.

use camino::Utf8PathBuf;
use layerstack::layer::dir::{Durability, OverlayXattrs};
use layerstack::merged::{DirRename, HardLinkCopyUp, Metacopy};

/// What `-o` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountSpec {
    /// `lowerdir=`: the lower directories, top first.
    pub lowers: Vec<Utf8PathBuf>,
    /// `upperdir=`.
    pub upper: Option<Utf8PathBuf>,
    /// `workdir=`.
    pub work: Option<Utf8PathBuf>,
    /// `redirect_dir=`.
    pub dir_rename: DirRename,
    /// `index=`.
    pub hard_links: HardLinkCopyUp,
    /// `metacopy=`.
    pub metacopy: Metacopy,
    /// `userxattr`.
    pub xattrs: OverlayXattrs,
    /// `volatile`.
    pub durability: Durability,
    /// `ro` (and `rw`, the last one winning).
    pub read_only: bool,
    /// `fsname=`: the source the mount table shows.
    pub fs_name: Option<String>,
    /// `allow_other` asked for (without it, the mount has it where it is
    /// permitted: as root, or with `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
}

/// The generic flags of mount(8), fstab and mount.fuse3 that mean nothing
/// to a FUSE filesystem serving a view (the kernel applies `nosuid`,
/// `nodev` and the like to FUSE mounts itself, and mount(8) keeps `x-*`
/// for its own use).
const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "async",
    "sync",
    "dirsync",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "nofail",
    "_netdev",
    // FUSE's own: the mount always has it.
    "default_permissions",
];

/// The options layerstack takes, for the message about an unknown one.
const KNOWN: &str = "lowerdir, upperdir, workdir, redirect_dir, index, metacopy, userxattr, volatile, ro, fsname, allow_other, and the generic flags (rw, nosuid, noatime, x-*, ...)";

/// Reads the `-o` options (each may hold several, comma-separated); with
/// `sloppy` (mount(8)'s `-s`), unknown options are passed over.
///
/// # Errors
/// A one-line message naming the option that is unknown, has a value it
/// cannot have, or lacks one.
pub fn parse(options: &[String], sloppy: bool) -> Result<MountSpec, String> {
    let mut spec = MountSpec::default();
    for option in options.iter().flat_map(|o| split_escaped(o, ',')) {
        if option.is_empty() {
            continue;
        }
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        let shown = unescape(&option);
        match (key, value) {
            ("lowerdir", Some(v)) => spec.lowers = lowerdirs(v)?,
            ("upperdir", Some(v)) => spec.upper = Some(dir(v, &shown)?),
            ("workdir", Some(v)) => spec.work = Some(dir(v, &shown)?),
            ("redirect_dir", Some(v)) => {
                spec.dir_rename = match v {
                    "on" => DirRename::Redirect,
                    "off" | "follow" => DirRename::CrossDevice,
                    "nofollow" => {
                        return Err(format!(
                            "mount option `{shown}` is not supported: layerstack always follows the redirects a layer holds"
                        ));
                    }
                    _ => return Err(bad_value(&shown, "on, off, follow or nofollow")),
                }
            }
            ("index", Some(v)) => {
                spec.hard_links = match on_off(v, &shown)? {
                    true => HardLinkCopyUp::Keep,
                    false => HardLinkCopyUp::Break,
                }
            }
            ("metacopy", Some(v)) => {
                spec.metacopy = match on_off(v, &shown)? {
                    true => Metacopy::Follow,
                    false => Metacopy::Refuse,
                }
            }
            ("fsname", Some(v)) => spec.fs_name = Some(fs_name(v, &shown)?),
            ("userxattr", None) => spec.xattrs = OverlayXattrs::User,
            ("volatile", None) => spec.durability = Durability::Volatile,
            ("ro", None) => spec.read_only = true,
            ("allow_other", None) => spec.allow_other = true,
            ("rw", None) => spec.read_only = false,
            (
                "lowerdir" | "upperdir" | "workdir" | "redirect_dir" | "index" | "metacopy"
                | "fsname",
                None,
            ) => {
                return Err(format!(
                    "mount option `{shown}` needs a value (`{key}=...`)"
                ));
            }
            ("userxattr" | "volatile" | "ro" | "allow_other", Some(_)) => {
                return Err(format!("mount option `{shown}` takes no value (`{key}`)"));
            }
            (k, _) if k.starts_with("x-") => {}
            (k, None) if IGNORED.contains(&k) => {}
            _ if sloppy => {}
            _ => return Err(format!("unknown mount option `{shown}` (known: {KNOWN})")),
        }
    }
    Ok(spec)
}

fn bad_value(shown: &str, allowed: &str) -> String {
    format!("mount option `{shown}` has a value it cannot have (allowed: {allowed})")
}

fn on_off(v: &str, shown: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(bad_value(shown, "on or off")),
    }
}

/// The `lowerdir=` value: top first, split at unescaped colons.
fn lowerdirs(value: &str) -> Result<Vec<Utf8PathBuf>, String> {
    let parts = split_escaped(value, ':');
    if parts.iter().any(String::is_empty) {
        // `A::B` names data-only layers (kernel 6.5+); an empty name at
        // either end is a typo.
        return Err(if value.contains("::") {
            format!(
                "mount option `lowerdir={}`: data-only lower layers (`::`) are not supported",
                unescape(value)
            )
        } else {
            format!(
                "mount option `lowerdir={}` has an empty directory name",
                unescape(value)
            )
        });
    }
    Ok(parts
        .iter()
        .map(|p| Utf8PathBuf::from(unescape(p)))
        .collect())
}

fn dir(value: &str, shown: &str) -> Result<Utf8PathBuf, String> {
    if value.is_empty() {
        return Err(format!("mount option `{shown}` names no directory"));
    }
    Ok(Utf8PathBuf::from(unescape(value)))
}

/// A source for the mount table: it goes into FUSE's own mount options,
/// so no comma, space or control byte.
fn fs_name(value: &str, shown: &str) -> Result<String, String> {
    let name = unescape(value);
    if name.is_empty() || !safe_fs_name(&name) {
        return Err(format!(
            "mount option `{shown}`: the name must be letters, digits and `._:/@+-`"
        ));
    }
    Ok(name)
}

/// Whether `name` can be the source FUSE writes into the mount table.
pub fn safe_fs_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b))
}

/// Splits `s` at each `sep` that no backslash escapes; the escapes stay
/// (a later split or [`unescape`] reads them).
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let part = parts.last_mut().expect("one part at least");
        if c == '\\' {
            part.push(c);
            if let Some(next) = chars.next() {
                part.push(next);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            part.push(c);
        }
    }
    parts
}

/// Drops each escaping backslash, keeping the character after it (a
/// backslash at the very end stays, as the kernel keeps it).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(_)) => out.push(chars.next().expect("peeked")),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(o: &str) -> Result<MountSpec, String> {
        parse(&[o.to_owned()], false)
    }

    fn paths(v: &[&str]) -> Vec<Utf8PathBuf> {
        v.iter().map(Utf8PathBuf::from).collect()
    }

    #[test]
    fn lowerdir_splits_at_colons_top_first_and_unescapes() {
        let spec = p(r"lowerdir=/l/top:/l/a\:b:/l/c\,d\\e,upperdir=/u\,1,workdir=/w").unwrap();
        assert_eq!(spec.lowers, paths(&["/l/top", "/l/a:b", r"/l/c,d\e"]));
        assert_eq!(spec.upper, Some(Utf8PathBuf::from("/u,1")));
        assert_eq!(spec.work, Some(Utf8PathBuf::from("/w")));
        assert!(!spec.read_only);
        // Repeated -o and a later lowerdir wins, as with the kernel.
        let spec = parse(
            &["lowerdir=/a".to_owned(), "lowerdir=/b:/c,ro".to_owned()],
            false,
        )
        .unwrap();
        assert_eq!(spec.lowers, paths(&["/b", "/c"]));
        assert!(spec.read_only);
    }

    #[test]
    fn the_kernel_s_options_map_to_the_view_s() {
        let spec =
            p("lowerdir=/a,redirect_dir=on,index=on,metacopy=on,userxattr,volatile").unwrap();
        assert_eq!(spec.dir_rename, DirRename::Redirect);
        assert_eq!(spec.hard_links, HardLinkCopyUp::Keep);
        assert_eq!(spec.metacopy, Metacopy::Follow);
        assert_eq!(spec.xattrs, OverlayXattrs::User);
        assert_eq!(spec.durability, Durability::Volatile);
        let spec = p("lowerdir=/a,redirect_dir=follow,index=off,metacopy=off").unwrap();
        assert_eq!(
            spec,
            MountSpec {
                lowers: paths(&["/a"]),
                ..MountSpec::default()
            }
        );
        assert_eq!(
            p("redirect_dir=off").unwrap().dir_rename,
            DirRename::CrossDevice
        );
    }

    #[test]
    fn generic_flags_are_passed_over_and_ro_rw_take_the_last() {
        let spec = p(
            "rw,nosuid,nodev,noexec,relatime,_netdev,x-systemd.automount,lowerdir=/a,dev,suid,ro",
        )
        .unwrap();
        assert!(spec.read_only);
        assert_eq!(spec.lowers, paths(&["/a"]));
        assert!(!p("ro,rw").unwrap().read_only);
        assert!(p("allow_other").unwrap().allow_other);
        assert!(!p("lowerdir=/a").unwrap().allow_other);
        assert_eq!(
            p("fsname=img:v1").unwrap().fs_name.as_deref(),
            Some("img:v1")
        );
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            p("lowerdir=/a,xino=auto").unwrap_err(),
            format!("unknown mount option `xino=auto` (known: {KNOWN})")
        );
        assert_eq!(
            p("index=yes").unwrap_err(),
            "mount option `index=yes` has a value it cannot have (allowed: on or off)"
        );
        assert_eq!(
            p("redirect_dir=nofollow").unwrap_err(),
            "mount option `redirect_dir=nofollow` is not supported: layerstack always follows the redirects a layer holds"
        );
        assert_eq!(
            p("lowerdir").unwrap_err(),
            "mount option `lowerdir` needs a value (`lowerdir=...`)"
        );
        assert_eq!(
            p("ro=1").unwrap_err(),
            "mount option `ro=1` takes no value (`ro`)"
        );
        assert_eq!(
            p("lowerdir=/a::/b").unwrap_err(),
            "mount option `lowerdir=/a::/b`: data-only lower layers (`::`) are not supported"
        );
        assert_eq!(
            p("lowerdir=/a:").unwrap_err(),
            "mount option `lowerdir=/a:` has an empty directory name"
        );
        assert_eq!(
            p("upperdir=").unwrap_err(),
            "mount option `upperdir=` names no directory"
        );
        assert!(p("fsname=a b").unwrap_err().contains("`fsname=a b`"));
        // mount -s: unknown options are passed over.
        assert_eq!(
            parse(&["xino=auto,lowerdir=/a".to_owned()], true)
                .unwrap()
                .lowers,
            paths(&["/a"])
        );
    }

    #[test]
    fn escapes_split_and_unescape_as_the_kernel_s() {
        assert_eq!(split_escaped(r"a\,b,c", ','), [r"a\,b", "c"]);
        assert_eq!(split_escaped("", ','), [""]);
        assert_eq!(unescape(r"a\\b\:c\"), r"a\b:c\");
    }
}
