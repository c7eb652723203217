//! Hand-made tars for tests, byte by byte, including malformed ones.

use std::io::Write;

/// A tar built entry by entry.
#[derive(Default)]
pub(crate) struct RawTar {
    pub bytes: Vec<u8>,
}

pub(crate) struct Hdr<'a> {
    pub name: &'a str,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: &'a str,
    pub major: u32,
    pub minor: u32,
}

impl<'a> Hdr<'a> {
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

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    pub fn header(&mut self, h: &Hdr<'_>) -> &mut RawTar {
        let mut hdr = tar::Header::new_ustar();
        hdr.as_mut_bytes()[..h.name.len().min(100)]
            .copy_from_slice(&h.name.as_bytes()[..h.name.len().min(100)]);
        hdr.set_mode(h.mode);
        hdr.set_uid(h.uid);
        hdr.set_gid(h.gid);
        hdr.set_mtime(h.mtime);
        hdr.set_size(h.size);
        hdr.set_entry_type(tar::EntryType::new(h.kind));
        if !h.link.is_empty() {
            hdr.set_link_name_literal(h.link.as_bytes()).unwrap();
        }
        if h.kind == b'3' || h.kind == b'4' {
            hdr.set_device_major(h.major).unwrap();
            hdr.set_device_minor(h.minor).unwrap();
        }
        hdr.set_cksum();
        self.bytes.extend_from_slice(hdr.as_bytes());
        self
    }

    pub fn data(&mut self, data: &[u8]) -> &mut RawTar {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut RawTar {
        let mut h = Hdr::new(name, b'0');
        h.size = data.len() as u64;
        self.header(&h).data(data)
    }

    pub fn dir(&mut self, name: &str) -> &mut RawTar {
        self.header(&Hdr::new(name, b'5'))
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut RawTar {
        let mut h = Hdr::new(name, b'2');
        h.link = target;
        h.mode = 0o777;
        self.header(&h)
    }

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

    pub fn end(&mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        std::mem::take(&mut self.bytes)
    }
}
