//! Building tar layers byte by byte for tests, including the malformed and
//! malicious ones `tar::Builder` would refuse to write.

use tar::{EntryType, Header};

pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        let bytes = name.as_bytes();
        assert!(bytes.len() <= 100, "use long() for names over 100 bytes");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    fn finish_header(mut h: Header) -> Header {
        h.set_cksum();
        h
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let h = Self::finish_header(Self::header(name, EntryType::Directory, mode, 0));
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_with(name, data, 0o644, 0, 0)
    }

    pub fn file_with(mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(name, EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        let h = Self::finish_header(h);
        self.builder.append(&h, data).unwrap();
        self
    }

    fn link_entry(mut self, name: &str, target: &str, kind: EntryType) -> Self {
        let mut h = Self::header(name, kind, 0o777, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        let h = Self::finish_header(h);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.link_entry(name, target, EntryType::Symlink)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.link_entry(name, target, EntryType::Link)
    }

    pub fn device(mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> Self {
        let mut h = Self::header(name, kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        let h = Self::finish_header(h);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    /// A file whose PAX header carries records (xattrs, long names).
    pub fn pax_file(mut self, name: &str, data: &[u8], records: &[(&str, &[u8])]) -> Self {
        let mut pax = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", len counting itself.
            let body_len = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            pax.extend_from_slice(format!("{len} {k}=").as_bytes());
            pax.extend_from_slice(v);
            pax.push(b'\n');
        }
        let ph = Self::finish_header(Self::header(
            "././@PaxHeader",
            EntryType::XHeader,
            0o644,
            pax.len() as u64,
        ));
        self.builder.append(&ph, &pax[..]).unwrap();
        let short = if name.len() > 100 { &name[..100] } else { name };
        let h = Self::finish_header(Self::header(
            short,
            EntryType::Regular,
            0o644,
            data.len() as u64,
        ));
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}
