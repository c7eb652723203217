//! The tar header writer: ustar headers with PAX records for what does
//! not fit, as export writes them (deterministic: no user or group names,
//! no prefix field, PAX headers under one fixed name).

use tar::{EntryType, Header};

use crate::error::{Error, ErrorKind, Operation, Result};
use crate::layer::overlay::is_bookkeeping_xattr;
use crate::meta::{MODE_MASK, Timestamp, Xattrs};
use crate::path::LayerPath;

/// The tar block size.
pub(crate) const BLOCK: usize = 512;

/// Ustar numeric fields: 7 octal digits for mode, owners and device
/// numbers, 11 for size and mtime.
pub(crate) const MAX_OCTAL_7: u64 = 0o7_777_777;
pub(crate) const MAX_OCTAL_11: u64 = 0o77_777_777_777;
/// The ustar name and linkname fields.
pub(crate) const NAME_FIELD: usize = 100;

/// The name of every PAX extended header (the one Python's `tarfile`
/// writes; readers never extract it).
pub(crate) const PAX_HEADER_NAME: &str = "././@PaxHeader";

/// Everything one tar header says.
#[derive(Debug)]
pub(crate) struct HeaderSpec<'a> {
    /// The full tar name, its bytes (a directory's ends in `/`).
    pub(crate) name: &'a [u8],
    pub(crate) entry_type: EntryType,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) mtime: Timestamp,
    /// A symlink's target or a hard link's first name, its bytes.
    pub(crate) link: Option<&'a [u8]>,
    /// Major and minor of a device.
    pub(crate) device: Option<(u32, u32)>,
    /// Extended attributes (overlay bookkeeping is left out here).
    pub(crate) xattrs: Option<&'a Xattrs>,
}

/// The ustar header of `spec` and the PAX records it needs (empty if none).
pub(crate) fn build_header(spec: &HeaderSpec<'_>, path: &LayerPath) -> Result<(Header, Vec<u8>)> {
    let error = |kind: ErrorKind, detail: String| {
        Error::new(kind, Operation::ExportLayer, path.as_name()).with_detail(detail)
    };
    let mut pax = Vec::new();
    let mut header = Header::new_ustar();

    let (field, whole) = name_field(spec.name);
    if !whole {
        pax_record(&mut pax, "path", spec.name);
    }
    header.as_old_mut().name[..field.len()].copy_from_slice(&field);

    if let Some(link) = spec.link {
        if link.contains(&0) {
            return Err(error(
                ErrorKind::InvalidInput,
                "the link target contains a NUL byte".into(),
            ));
        }
        let (field, whole) = name_field(link);
        if !whole {
            pax_record(&mut pax, "linkpath", link);
        }
        header
            .set_link_name_literal(&field)
            .map_err(|e| error(ErrorKind::InvalidInput, e.to_string()))?;
    }

    if spec.size > MAX_OCTAL_11 {
        pax_record(&mut pax, "size", spec.size.to_string().as_bytes());
        header.set_size(0);
    } else {
        header.set_size(spec.size);
    }
    for (key, id) in [("uid", spec.uid), ("gid", spec.gid)] {
        let id = u64::from(id);
        let field = if id > MAX_OCTAL_7 {
            pax_record(&mut pax, key, id.to_string().as_bytes());
            0
        } else {
            id
        };
        if key == "uid" {
            header.set_uid(field);
        } else {
            header.set_gid(field);
        }
    }

    let mtime = normalised(spec.mtime);
    let seconds_fit = u64::try_from(mtime.sec).is_ok_and(|s| s <= MAX_OCTAL_11);
    if !seconds_fit || mtime.nsec != 0 {
        pax_record(&mut pax, "mtime", pax_time(mtime).as_bytes());
    }
    header.set_mtime(if seconds_fit {
        mtime.sec.unsigned_abs()
    } else {
        0
    });

    if let Some(xattrs) = spec.xattrs {
        for (name, value) in xattrs.iter().filter(|(n, _)| !is_bookkeeping_xattr(n)) {
            if name.contains('=') || name.contains('\0') {
                return Err(error(
                    ErrorKind::InvalidInput,
                    format!(
                        "extended attribute name `{}` cannot be stored in a PAX record",
                        name.escape_default()
                    ),
                ));
            }
            pax_record(&mut pax, &format!("SCHILY.xattr.{name}"), value);
        }
    }

    let (dev_major, dev_minor) = spec.device.unwrap_or((0, 0));
    if u64::from(dev_major) > MAX_OCTAL_7 || u64::from(dev_minor) > MAX_OCTAL_7 {
        return Err(error(
            ErrorKind::Unsupported,
            format!("device number {dev_major}:{dev_minor} does not fit a tar header"),
        ));
    }
    let io_error = |e: std::io::Error| error(ErrorKind::Io, e.to_string());
    header.set_device_major(dev_major).map_err(io_error)?;
    header.set_device_minor(dev_minor).map_err(io_error)?;

    header.set_mode(spec.mode & MODE_MASK);
    header.set_entry_type(spec.entry_type);
    header.set_cksum();
    Ok((header, pax))
}

/// The header of a PAX extended header holding `len` bytes of records.
pub(crate) fn pax_header(len: u64) -> Header {
    let mut header = Header::new_ustar();
    let name = PAX_HEADER_NAME.as_bytes();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(len);
    header.set_mtime(0);
    // Always Ok for a ustar header.
    let _ = header.set_device_major(0);
    let _ = header.set_device_minor(0);
    header.set_entry_type(EntryType::XHeader);
    header.set_cksum();
    header
}

/// What the ustar name (or linkname) field holds for a name, and whether
/// that is the whole name (if not, a PAX record carries it).
///
/// A UTF-8 name goes in as it is, cut at a character boundary when it is
/// longer than the field. A name that is not UTF-8 is written as Go's
/// `archive/tar` writes it (the writer of Docker and containerd; see
/// `name.rs`): the bytes in a PAX record, and in the field the name with
/// every byte that is not ASCII (or is NUL) left out, cut at 100 bytes,
/// without the trailing `/` a cut would leave (Go's `toASCII` and
/// `formatString`).
pub(crate) fn name_field(name: &[u8]) -> (Vec<u8>, bool) {
    if let Ok(text) = std::str::from_utf8(name) {
        let field = truncated(text, NAME_FIELD).as_bytes();
        return (field.to_vec(), field.len() == name.len());
    }
    let ascii: Vec<u8> = name
        .iter()
        .copied()
        .filter(|&b| b != 0 && b < 0x80)
        .collect();
    let mut field = ascii[..ascii.len().min(NAME_FIELD)].to_vec();
    if ascii.len() > NAME_FIELD {
        while field.last() == Some(&b'/') {
            field.pop();
        }
    }
    (field, false)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends the PAX record `"<len> <key>=<value>\n"`, where `len` counts
/// the whole record, its own digits included.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=' and '\n'
    let mut len = rest + 1;
    loop {
        let total = rest + decimal_digits(len);
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

pub(crate) fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

pub(crate) const NANOS_PER_SEC: u32 = 1_000_000_000;

/// `t` with `nsec` below one second (the fields are public, so a layer
/// can hand over anything).
pub(crate) fn normalised(t: Timestamp) -> Timestamp {
    Timestamp {
        sec: t.sec.saturating_add(i64::from(t.nsec / NANOS_PER_SEC)),
        nsec: t.nsec % NANOS_PER_SEC,
    }
}

/// A time as a PAX record value: seconds, then a fraction with trailing
/// zeros trimmed (`-1.5` is one and a half seconds before the epoch).
pub(crate) fn pax_time(t: Timestamp) -> String {
    let t = normalised(t);
    if t.nsec == 0 {
        return t.sec.to_string();
    }
    let (sign, sec, nsec) = if t.sec < 0 {
        // `sec + nsec` is negative: -(|sec| - 1) - (1e9 - nsec) ns.
        ("-", (t.sec + 1).unsigned_abs(), NANOS_PER_SEC - t.nsec)
    } else {
        ("", t.sec.unsigned_abs(), t.nsec)
    };
    let fraction = format!("{nsec:09}");
    format!("{sign}{sec}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sec: i64, nsec: u32) -> Timestamp {
        Timestamp::new(sec, nsec)
    }

    fn spec(name: &str) -> HeaderSpec<'_> {
        raw_spec(name.as_bytes())
    }

    fn raw_spec(name: &[u8]) -> HeaderSpec<'_> {
        HeaderSpec {
            name,
            entry_type: EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: Timestamp::EPOCH,
            link: None,
            device: None,
            xattrs: None,
        }
    }

    fn pax_of(spec: &HeaderSpec<'_>) -> (Header, String) {
        let (header, pax) = build_header(spec, &LayerPath::root()).unwrap();
        (header, String::from_utf8(pax).unwrap())
    }

    #[test]
    fn numbers_past_ustar_go_into_pax_records() {
        let mut s = spec("f");
        s.size = MAX_OCTAL_11;
        let (h, pax) = pax_of(&s);
        assert_eq!((h.size().unwrap(), pax.as_str()), (MAX_OCTAL_11, ""));
        s.size = 8 << 30;
        let (h, pax) = pax_of(&s);
        assert_eq!(
            (h.size().unwrap(), pax.as_str()),
            (0, "19 size=8589934592\n")
        );

        let mut s = spec("f");
        s.uid = 0o7_777_777;
        s.gid = 0o10_000_000;
        let (h, pax) = pax_of(&s);
        assert_eq!(h.uid().unwrap(), 0o7_777_777);
        assert_eq!(&h.as_old().gid, b"0000000\0");
        assert_eq!(pax, "15 gid=2097152\n");

        let mut s = spec("f");
        s.mtime = at(0o77_777_777_777, 0);
        assert_eq!(pax_of(&s).1, "");
        s.mtime = at(0o100_000_000_000, 0);
        let (h, pax) = pax_of(&s);
        assert_eq!(
            (h.mtime().unwrap(), pax.as_str()),
            (0, "20 mtime=8589934592\n")
        );
        s.mtime = at(5, 120_000_000);
        let (h, pax) = pax_of(&s);
        assert_eq!((h.mtime().unwrap(), pax.as_str()), (5, "14 mtime=5.12\n"));
    }

    #[test]
    fn long_names_keep_a_cut_at_a_character_boundary() {
        let name = format!("a{}", "é".repeat(80));
        let (h, pax) = pax_of(&spec(&name));
        assert_eq!(h.path_bytes().as_ref(), &name.as_bytes()[..99]);
        assert_eq!(pax, format!("171 path={name}\n"));
        let exact = "x".repeat(NAME_FIELD);
        let (h, pax) = pax_of(&spec(&exact));
        assert_eq!(
            (h.path_bytes().as_ref(), pax.as_str()),
            (exact.as_bytes(), "")
        );
    }

    /// The bytes Go 1.19's `archive/tar` writes for these names (format
    /// left to it): a PAX record with the bytes, the field without the
    /// bytes that are not ASCII. GNU tar and Go read the record back as it
    /// is (`tests/it/oci/names.rs` checks it against both).
    #[test]
    fn names_that_are_not_utf8_are_written_as_go_writes_them() {
        let (h, pax) = build_header(&raw_spec(b"caf\xe9"), &LayerPath::root()).unwrap();
        assert_eq!(h.path_bytes().as_ref(), b"caf");
        assert_eq!(pax, b"13 path=caf\xe9\n");

        let koi8 = b"\xf0\xd2\xc9\xd7\xc5\xd4";
        let mut s = spec("ln");
        s.entry_type = EntryType::Symlink;
        s.link = Some(koi8);
        let (h, pax) = build_header(&s, &LayerPath::root()).unwrap();
        assert_eq!(h.path_bytes().as_ref(), b"ln");
        assert_eq!(h.as_old().linkname, [0u8; 100]);
        assert_eq!(pax, b"19 linkpath=\xf0\xd2\xc9\xd7\xc5\xd4\n");

        // Past 100 bytes: the ASCII bytes cut at 100, with no `/` at the
        // cut, and the whole name in the record.
        let mut long = b"d".repeat(99);
        long.extend_from_slice(b"//\xe9e/");
        let (h, pax) = build_header(&raw_spec(&long), &LayerPath::root()).unwrap();
        assert_eq!(h.path_bytes().as_ref(), &long[..99]);
        let mut want = b"114 path=".to_vec();
        want.extend_from_slice(&long);
        want.push(b'\n');
        assert_eq!(pax, want);

        // UTF-8 names are written as before: the field alone when they fit.
        let (h, pax) = build_header(&spec("\u{e9}t\u{e9}"), &LayerPath::root()).unwrap();
        assert_eq!(
            (h.path_bytes().as_ref(), pax.len()),
            ("\u{e9}t\u{e9}".as_bytes(), 0)
        );
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for value_len in 0..1100 {
            let mut out = Vec::new();
            pax_record(&mut out, "path", "v".repeat(value_len).as_bytes());
            let space = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..space]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {value_len} bytes");
        }
    }

    #[test]
    fn pax_times_trim_the_fraction() {
        assert_eq!(pax_time(at(1, 0)), "1");
        assert_eq!(pax_time(at(-1, 0)), "-1");
        assert_eq!(pax_time(at(1, 500_000_000)), "1.5");
        assert_eq!(pax_time(at(1, 1)), "1.000000001");
        assert_eq!(pax_time(at(-1, 500_000_000)), "-0.5");
        assert_eq!(pax_time(at(-2, 999_999_999)), "-1.000000001");
        assert_eq!(pax_time(at(i64::MIN, 1)), "-9223372036854775807.999999999");
        // Out-of-range nanoseconds (public fields) carry into the seconds.
        let raw = |sec, nsec| Timestamp { sec, nsec };
        assert_eq!(pax_time(raw(1, 2_500_000_000)), "3.5");
        assert_eq!(
            pax_time(raw(i64::MAX, u32::MAX)),
            "9223372036854775807.294967295"
        );
        let mut s = spec("f");
        s.mtime = raw(7, 1_000_000_000);
        let (h, pax) = pax_of(&s);
        assert_eq!((h.mtime().unwrap(), pax.as_str()), (8, ""));
    }
}
