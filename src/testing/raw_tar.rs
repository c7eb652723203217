//! Hand-made tars for tests, byte by byte, including malformed ones: names
//! `tar::Header::set_path` would refuse (`..`, absolute, `.wh.`), sizes that
//! disagree with a PAX record, device numbers of whiteouts. Test support
//! (feature `proptest`), used by the crate's own tests and by the hostile
//! input tests.
//!
//! ```
//! use layerstack::testing::RawTar;
//!
//! let tar = RawTar::new().dir("etc/").file("etc/../../escape", b"x").end();
//! assert_eq!(tar.len(), 512 * 5); // two headers, one data block, the end
//! ```

use std::io::Write;

/// A tar built entry by entry.
#[derive(Debug, Default)]
pub struct RawTar {
    /// The bytes so far.
    pub bytes: Vec<u8>,
}

/// One ustar header, written as given (nothing is checked).
#[derive(Debug, Clone)]
pub struct Hdr<'a> {
    /// The name field (at most 100 bytes are written).
    pub name: &'a str,
    /// The type flag (`b'0'` file, `b'5'` directory, `b'2'` symlink, ...).
    pub kind: u8,
    /// Permission bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Modification time, seconds.
    pub mtime: u64,
    /// The size field.
    pub size: u64,
    /// The link name field (hard link or symlink target).
    pub link: &'a str,
    /// Device major number (character and block devices).
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
}

impl<'a> Hdr<'a> {
    /// A header for `name` of type `kind`: mode 0o755 for a directory,
    /// 0o644 otherwise, owner 0:0, a fixed time, no size.
    pub fn new(name: &'a str, kind: u8) -> Hdr<'a> {
        Hdr {
            name,
            kind,
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            size: 0,
            link: "",
            major: 0,
            minor: 0,
        }
    }
}

impl Hdr<'_> {
    /// The 512 bytes of this header, with its checksum.
    ///
    /// # Panics
    /// If the link name or a device number does not fit its field.
    pub fn bytes(&self) -> [u8; 512] {
        let mut hdr = tar::Header::new_ustar();
        let n = self.name.len().min(100);
        hdr.as_mut_bytes()[..n].copy_from_slice(&self.name.as_bytes()[..n]);
        hdr.set_mode(self.mode);
        hdr.set_uid(self.uid);
        hdr.set_gid(self.gid);
        hdr.set_mtime(self.mtime);
        hdr.set_size(self.size);
        hdr.set_entry_type(tar::EntryType::new(self.kind));
        if !self.link.is_empty() {
            hdr.set_link_name_literal(self.link.as_bytes()).unwrap();
        }
        if self.kind == b'3' || self.kind == b'4' {
            hdr.set_device_major(self.major).unwrap();
            hdr.set_device_minor(self.minor).unwrap();
        }
        hdr.set_cksum();
        *hdr.as_bytes()
    }
}

impl RawTar {
    /// An empty tar.
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// Appends a header.
    pub fn header(&mut self, h: &Hdr<'_>) -> &mut RawTar {
        self.bytes.extend_from_slice(&h.bytes());
        self
    }

    /// Appends data, padded to the next 512-byte block.
    pub fn data(&mut self, data: &[u8]) -> &mut RawTar {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Appends a regular file with its data.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut RawTar {
        let mut h = Hdr::new(name, b'0');
        h.size = data.len() as u64;
        self.header(&h).data(data)
    }

    /// Appends a directory.
    pub fn dir(&mut self, name: &str) -> &mut RawTar {
        self.header(&Hdr::new(name, b'5'))
    }

    /// Appends a symlink (mode 0o777).
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut RawTar {
        let mut h = Hdr::new(name, b'2');
        h.link = target;
        h.mode = 0o777;
        self.header(&h)
    }

    /// Appends a hard link to `target`.
    pub fn hard_link(&mut self, name: &str, target: &str) -> &mut RawTar {
        let mut h = Hdr::new(name, b'1');
        h.link = target;
        self.header(&h)
    }

    /// A PAX extended header with these records.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut RawTar {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            write!(body, "{len} {k}=").unwrap();
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut h = Hdr::new("././@PaxHeader", b'x');
        h.size = body.len() as u64;
        self.header(&h).data(&body)
    }

    /// Appends the two zero blocks that end a tar and returns the bytes.
    pub fn end(&mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        std::mem::take(&mut self.bytes)
    }
}
