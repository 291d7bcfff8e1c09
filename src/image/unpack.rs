//! Applying one layer's tar stream into a snapshot directory, safely.
//!
//! Every filesystem operation is relative to a directory fd obtained with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, never a string-joined
//! path, so no entry can create, modify or follow anything outside the
//! snapshot (the shapes of CVE-2021-29136, CVE-2021-32760, CVE-2025-47290,
//! CVE-2018-15664). Entries that try are rejected with their name:
//! `..` components, parents that are symlinks, hardlinks leaving the layer,
//! whiteouts of `.`/`..`, a bare `.wh.`, entries under a path the same layer
//! whited out. Absolute names are taken relative to the snapshot root.
//!
//! Whiteouts become overlayfs whiteouts (a 0:0 character device) and
//! `.wh..wh..opq` an opaque directory (`trusted.overlay.opaque=y`), so
//! snapshots stack as overlay lower directories.
//!
//! Layers are unpacked in parallel, each into its own directory, so what
//! needs the layers below (metadata of parent directories the tar does not
//! list, hardlinks to files of lower layers) is recorded and done by
//! [`LayerApplier::finish`] once those layers are in place.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, mknodat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::sys;

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const COPY_BUF: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} rejected: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("layer entry {entry:?}: {action}")]
    Io {
        entry: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("read layer archive")]
    Archive {
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// The underlying I/O error, if any (to tell disk-full from bad input).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            UnpackError::Io { source, .. } | UnpackError::Archive { source } => Some(source),
            UnpackError::Unsafe { .. } => None,
        }
    }
}

fn reject(entry: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Unsafe {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn io_at<'a>(entry: &'a str, action: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        entry: entry.to_string(),
        action,
        source: io::Error::from(e),
    }
}

/// Counts for reports and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Applies one layer into an empty directory.
pub struct LayerApplier {
    root: OwnedFd,
    /// Paths whited out by this layer.
    deleted: HashSet<PathBuf>,
    /// Paths this layer created.
    created: HashSet<PathBuf>,
    /// Directories whose mtime is set at the end (children change it).
    dir_times: Vec<(PathBuf, TimeSpec)>,
    /// Parent directories this layer did not list; their metadata comes from below.
    implicit_dirs: Vec<PathBuf>,
    /// Hardlinks whose target is not in this layer: (link, target).
    lower_links: Vec<(PathBuf, PathBuf)>,
    /// Last opened parent directory, since tar entries come grouped by directory.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    stats: ApplyStats,
}

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOFOLLOW);

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Splits a tar name into clean components: leading `/`, empty and `.`
/// components dropped; `..` refused.
pub fn clean_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

impl LayerApplier {
    /// `target` must be an empty directory.
    pub fn new(target: &Path) -> Result<Self, UnpackError> {
        let root =
            nix::fcntl::open(target, DIR_FLAGS, Mode::empty()).map_err(|e| UnpackError::Io {
                entry: target.display().to_string(),
                action: "open snapshot directory",
                source: e.into(),
            })?;
        Ok(LayerApplier {
            root,
            deleted: HashSet::new(),
            created: HashSet::new(),
            dir_times: Vec::new(),
            implicit_dirs: Vec::new(),
            lower_links: Vec::new(),
            parent_cache: None,
            stats: ApplyStats::default(),
        })
    }

    /// Applies every entry of a tar stream. Does not read past the end-of-archive marker.
    pub fn apply<R: Read>(&mut self, reader: R) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .map_err(|source| UnpackError::Archive { source })?;
        let mut buf = vec![0u8; COPY_BUF];
        for entry in entries {
            let mut entry = entry.map_err(|source| UnpackError::Archive { source })?;
            self.apply_entry(&mut entry, &mut buf)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        buf: &mut [u8],
    ) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let path = clean_path(&raw).map_err(|r| reject(&name, r))?;
        let Some(file_name) = path.file_name().map(OsStr::to_os_string) else {
            // The layer root itself ("./"): its metadata belongs to the image
            // rootfs, which the runtime owns.
            return Ok(());
        };
        let file_name_str = file_name.to_string_lossy().into_owned();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.stats.entries += 1;

        if let Some(target) = file_name_str.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&name, &parent, target);
        }
        if let Some(d) = path.ancestors().find(|a| self.deleted.contains(*a)) {
            return Err(reject(
                &name,
                format!(
                    "path is under {:?}, which this layer deleted with a whiteout",
                    d.display().to_string()
                ),
            ));
        }
        let hdr = entry.header();
        let meta = Meta {
            mode: hdr
                .mode()
                .map_err(|source| UnpackError::Archive { source })?
                & 0o7777,
            uid: hdr
                .uid()
                .map_err(|source| UnpackError::Archive { source })?,
            gid: hdr
                .gid()
                .map_err(|source| UnpackError::Archive { source })?,
            mtime: entry_mtime(entry),
            xattrs: entry_xattrs(entry, &name)?,
        };
        let dir = self.open_parent(&name, &parent)?;
        let fname = file_name.as_os_str();
        match kind {
            tar::EntryType::Directory => {
                match stat_at(&dir, fname) {
                    Some(st) if is_type(&st, SFlag::S_IFDIR) => {}
                    Some(_) => {
                        remove_at(&dir, fname, &name)?;
                        mkdirat(&dir, fname, Mode::from_bits_truncate(0o700))
                            .map_err(io_at(&name, "create directory"))?;
                    }
                    None => mkdirat(&dir, fname, Mode::from_bits_truncate(0o700))
                        .map_err(io_at(&name, "create directory"))?,
                }
                set_meta(&dir, fname, &meta, &name, false)?;
                self.dir_times.push((path.clone(), meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.replace(&dir, fname, &name)?;
                let fd = openat(
                    &dir,
                    fname,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(io_at(&name, "create file"))?;
                let mut file = File::from(fd);
                loop {
                    let n = entry
                        .read(buf)
                        .map_err(|source| UnpackError::Archive { source })?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])
                        .map_err(|source| UnpackError::Io {
                            entry: name.clone(),
                            action: "write file",
                            source,
                        })?;
                    self.stats.bytes += n as u64;
                }
                drop(file);
                set_meta(&dir, fname, &meta, &name, true)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| reject(&name, "symlink without a target"))?
                    .into_owned();
                self.replace(&dir, fname, &name)?;
                // The target is data, resolved only inside the container later.
                symlinkat(OsStr::from_bytes(&target), &dir, fname)
                    .map_err(io_at(&name, "create symlink"))?;
                set_meta(&dir, fname, &meta, &name, false)?;
            }
            tar::EntryType::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| reject(&name, "hardlink without a target"))?
                    .into_owned();
                let target = clean_path(&raw_target)
                    .map_err(|r| reject(&name, format!("hardlink target: {r}")))?;
                if target.file_name().is_none() {
                    return Err(reject(&name, "hardlink to the layer root"));
                }
                self.replace(&dir, fname, &name)?;
                self.hardlink(&dir, fname, &path, &target, &name)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char => (SFlag::S_IFCHR, header_dev(entry)?),
                    tar::EntryType::Block => (SFlag::S_IFBLK, header_dev(entry)?),
                    _ => (SFlag::S_IFIFO, 0),
                };
                self.replace(&dir, fname, &name)?;
                mknodat(&dir, fname, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(io_at(&name, "create device node"))?;
                set_meta(&dir, fname, &meta, &name, false)?;
            }
            other => {
                return Err(reject(
                    &name,
                    format!("unsupported tar entry type {other:?}"),
                ))
            }
        }
        self.created.insert(path);
        Ok(())
    }

    fn whiteout(&mut self, name: &str, parent: &Path, target: &str) -> Result<(), UnpackError> {
        self.stats.whiteouts += 1;
        let full_name = format!("{WHITEOUT_PREFIX}{target}");
        if full_name == OPAQUE_MARKER {
            let dir_path = parent.to_path_buf();
            let Some(dname) = dir_path.file_name().map(OsStr::to_os_string) else {
                return Err(reject(name, "opaque marker at the layer root"));
            };
            let grand = dir_path.parent().map(Path::to_path_buf).unwrap_or_default();
            let gfd = self.open_parent(name, &grand)?;
            if stat_at(&gfd, &dname).is_none() {
                mkdirat(&gfd, dname.as_os_str(), Mode::from_bits_truncate(0o755))
                    .map_err(io_at(name, "create opaque directory"))?;
                self.implicit_dirs.push(dir_path.clone());
            }
            sys::lsetxattr_at(gfd.as_fd(), &dname.to_string_lossy(), OPAQUE_XATTR, b"y").map_err(
                |source| UnpackError::Io {
                    entry: name.to_string(),
                    action: "mark directory opaque",
                    source,
                },
            )?;
            return Ok(());
        }
        if target.is_empty() {
            return Err(reject(name, "bare whiteout '.wh.' names nothing"));
        }
        if target == "." || target == ".." {
            return Err(reject(name, format!("whiteout of {target:?}")));
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content; Docker skips it too.
            tracing::debug!(entry = name, "skipping aufs metadata entry");
            return Ok(());
        }
        let victim = parent.join(target);
        if self.created.contains(&victim) {
            return Err(reject(name, "whiteout of a path this same layer created"));
        }
        let dir = self.open_parent(name, parent)?;
        let t = OsStr::new(target);
        if stat_at(&dir, t).is_some() {
            remove_at(&dir, t, name)?;
        }
        mknodat(&dir, t, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(io_at(name, "create whiteout"))?;
        self.deleted.insert(victim);
        Ok(())
    }

    /// Removes whatever is at `fname` so a non-directory entry can take its
    /// place (a later entry wins, as with tar).
    fn replace(&self, dir: &OwnedFd, fname: &OsStr, name: &str) -> Result<(), UnpackError> {
        if stat_at(dir, fname).is_some() {
            remove_at(dir, fname, name)?;
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        dir: &OwnedFd,
        fname: &OsStr,
        path: &Path,
        target: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        let tparent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        let tname = target
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        let tdir = match self.open_existing_dir(&tparent) {
            Ok(Some(fd)) => Some(fd),
            Ok(None) => None,
            Err(reason) => {
                return Err(reject(
                    name,
                    format!("hardlink target {}: {reason}", target.display()),
                ))
            }
        };
        if let Some(tdir) = tdir {
            if stat_at(&tdir, &tname).is_some() {
                linkat(
                    &tdir,
                    tname.as_os_str(),
                    dir,
                    fname,
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(io_at(name, "create hardlink"))?;
                return Ok(());
            }
        }
        // Not in this layer: link to a file of a lower layer, copied up by finish().
        self.lower_links
            .push((path.to_path_buf(), target.to_path_buf()));
        Ok(())
    }

    /// Opens the parent directory of an entry, creating missing components.
    fn open_parent(&mut self, name: &str, parent: &Path) -> Result<OwnedFd, UnpackError> {
        if let Some((p, fd)) = &self.parent_cache {
            if p == parent {
                return fd.try_clone().map_err(|source| UnpackError::Io {
                    entry: name.to_string(),
                    action: "duplicate directory fd",
                    source,
                });
            }
        }
        let fd = match self.open_existing_dir(parent) {
            Ok(Some(fd)) => fd,
            Ok(None) => self.create_dirs(name, parent)?,
            Err(reason) => return Err(reject(name, reason)),
        };
        let cached = fd.try_clone().map_err(|source| UnpackError::Io {
            entry: name.to_string(),
            action: "duplicate directory fd",
            source,
        })?;
        self.parent_cache = Some((parent.to_path_buf(), cached));
        Ok(fd)
    }

    /// `Ok(None)` when some component does not exist; `Err` when the path
    /// goes through a symlink or a non-directory, or would leave the root.
    fn open_existing_dir(&self, rel: &Path) -> Result<Option<OwnedFd>, String> {
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match openat2(
            &self.root,
            rel,
            OpenHow::new().flags(DIR_FLAGS).resolve(beneath()),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => {
                // Missing, unless an existing component is a symlink or a file.
                let mut cur = PathBuf::new();
                for c in rel.components() {
                    cur.push(c);
                    match openat2(
                        &self.root,
                        &cur,
                        OpenHow::new().flags(DIR_FLAGS).resolve(beneath()),
                    ) {
                        Ok(_) => {}
                        Err(Errno::ENOENT) => return Ok(None),
                        Err(e) => return Err(describe_walk_error(e, &cur)),
                    }
                }
                Ok(None)
            }
            Err(e) => Err(describe_walk_error(e, rel)),
        }
    }

    fn create_dirs(&mut self, name: &str, rel: &Path) -> Result<OwnedFd, UnpackError> {
        let mut cur = nix::fcntl::openat(&self.root, ".", DIR_FLAGS, Mode::empty())
            .map_err(io_at(name, "open snapshot root"))?;
        let mut so_far = PathBuf::new();
        for c in rel.components() {
            let comp = c.as_os_str();
            so_far.push(comp);
            let next = match openat2(
                &cur,
                comp,
                OpenHow::new().flags(DIR_FLAGS).resolve(beneath()),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    if self.deleted.contains(&so_far) {
                        return Err(reject(
                            name,
                            format!(
                                "path is under {:?}, which this layer deleted with a whiteout",
                                so_far.display().to_string()
                            ),
                        ));
                    }
                    mkdirat(&cur, comp, Mode::from_bits_truncate(0o755))
                        .map_err(io_at(name, "create parent directory"))?;
                    self.implicit_dirs.push(so_far.clone());
                    openat2(
                        &cur,
                        comp,
                        OpenHow::new().flags(DIR_FLAGS).resolve(beneath()),
                    )
                    .map_err(io_at(name, "open parent directory"))?
                }
                Err(e) => return Err(reject(name, describe_walk_error(e, &so_far))),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Completes the layer with what needs the layers below, `lowers` being
    /// their snapshot directories, top-most first.
    pub fn finish(mut self, lowers: &[PathBuf]) -> Result<ApplyStats, UnpackError> {
        let lower_roots: Vec<OwnedFd> = lowers
            .iter()
            .filter_map(|p| nix::fcntl::open(p.as_path(), DIR_FLAGS, Mode::empty()).ok())
            .collect();
        for dir in std::mem::take(&mut self.implicit_dirs) {
            let name = dir.display().to_string();
            let Some(st) = find_in_lowers(&lower_roots, &dir) else {
                continue; // keep 0755 root:root, as containerd does for unknown parents
            };
            if !is_type(&st.0, SFlag::S_IFDIR) {
                continue;
            }
            let (parent_fd, fname) = self.parent_of(&dir, &name)?;
            let meta = Meta {
                mode: st.0.st_mode & 0o7777,
                uid: u64::from(st.0.st_uid),
                gid: u64::from(st.0.st_gid),
                mtime: TimeSpec::new(st.0.st_mtime, st.0.st_mtime_nsec),
                xattrs: Vec::new(),
            };
            set_meta(&parent_fd, &fname, &meta, &name, false)?;
        }
        for (link, target) in std::mem::take(&mut self.lower_links) {
            let name = link.display().to_string();
            self.copy_up(&lower_roots, &link, &target, &name)?;
        }
        for (dir, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            let name = dir.display().to_string();
            let (parent_fd, fname) = self.parent_of(&dir, &name)?;
            nix::sys::stat::utimensat(
                &parent_fd,
                fname.as_os_str(),
                &mtime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(io_at(&name, "set directory times"))?;
        }
        Ok(self.stats)
    }

    fn parent_of(
        &self,
        p: &Path,
        name: &str,
    ) -> Result<(OwnedFd, std::ffi::OsString), UnpackError> {
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        let fname = p.file_name().map(OsStr::to_os_string).unwrap_or_default();
        match self.open_existing_dir(&parent) {
            Ok(Some(fd)) => Ok((fd, fname)),
            Ok(None) => Err(reject(name, "parent directory vanished")),
            Err(reason) => Err(reject(name, reason)),
        }
    }

    /// A hardlink to a file of a lower layer becomes a copy of it here.
    fn copy_up(
        &self,
        lowers: &[OwnedFd],
        link: &Path,
        target: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        let Some((st, lower)) = find_in_lowers(lowers, target) else {
            return Err(reject(
                name,
                format!(
                    "hardlink target {:?} is in neither this layer nor a lower one",
                    target.display().to_string()
                ),
            ));
        };
        if !is_type(&st, SFlag::S_IFREG) {
            return Err(reject(
                name,
                "hardlink target in a lower layer is not a regular file",
            ));
        }
        let src = openat2(
            &lowers[lower],
            target,
            OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
                .resolve(beneath()),
        )
        .map_err(io_at(name, "open hardlink target in lower layer"))?;
        let (dir, fname) = self.parent_of(link, name)?;
        let dst = openat(
            &dir,
            fname.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io_at(name, "create copy of lower-layer hardlink target"))?;
        io::copy(&mut File::from(src), &mut File::from(dst)).map_err(|source| UnpackError::Io {
            entry: name.to_string(),
            action: "copy lower-layer file",
            source,
        })?;
        let tparent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        let tname = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let xattrs = openat2(
            &lowers[lower],
            if tparent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &tparent
            },
            OpenHow::new().flags(DIR_FLAGS).resolve(beneath()),
        )
        .ok()
        .map(|pfd| copy_xattrs(&pfd, &tname))
        .unwrap_or_default();
        let meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            xattrs,
        };
        set_meta(&dir, &fname, &meta, name, true)
    }
}

fn describe_walk_error(e: Errno, at: &Path) -> String {
    match e {
        Errno::ELOOP => format!("path component {:?} is a symlink", at.display().to_string()),
        Errno::ENOTDIR => format!(
            "path component {:?} is a symlink or not a directory",
            at.display().to_string()
        ),
        Errno::EXDEV => format!("path {:?} would leave the layer", at.display().to_string()),
        other => format!("cannot resolve {:?}: {other}", at.display().to_string()),
    }
}

fn find_in_lowers(lowers: &[OwnedFd], rel: &Path) -> Option<(FileStat, usize)> {
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let fname = rel.file_name()?;
    for (i, root) in lowers.iter().enumerate() {
        let pdir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent.as_path()
        };
        let Ok(pfd) = openat2(
            root,
            pdir,
            OpenHow::new().flags(DIR_FLAGS).resolve(beneath()),
        ) else {
            continue;
        };
        if let Some(st) = stat_at(&pfd, fname) {
            // A whiteout in an upper layer hides everything below it.
            if is_type(&st, SFlag::S_IFCHR) && st.st_rdev == 0 {
                return None;
            }
            return Some((st, i));
        }
    }
    None
}

fn copy_xattrs(dir: &OwnedFd, name: &str) -> Vec<(String, Vec<u8>)> {
    let keys = sys::llistxattr_at(dir.as_fd(), name).unwrap_or_default();
    keys.into_iter()
        .filter_map(|k| {
            sys::lgetxattr_at(dir.as_fd(), name, &k)
                .ok()
                .flatten()
                .map(|v| (k, v))
        })
        .collect()
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == t
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Option<FileStat> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

/// Ownership, then mode (chown clears setuid/setgid), then xattrs (chown
/// clears `security.capability`), then times.
fn set_meta(
    dir: &OwnedFd,
    fname: &OsStr,
    m: &Meta,
    entry: &str,
    chmod: bool,
) -> Result<(), UnpackError> {
    let uid =
        u32::try_from(m.uid).map_err(|_| reject(entry, format!("uid {} out of range", m.uid)))?;
    let gid =
        u32::try_from(m.gid).map_err(|_| reject(entry, format!("gid {} out of range", m.gid)))?;
    let st = stat_at(dir, fname);
    let is_link = st.as_ref().is_some_and(|s| is_type(s, SFlag::S_IFLNK));
    fchownat(
        dir,
        fname,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_at(entry, "set owner"))?;
    if !is_link && (chmod || st.is_some()) {
        nix::sys::stat::fchmodat(
            dir,
            fname,
            Mode::from_bits_truncate(m.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io_at(entry, "set mode"))?;
    }
    let fname_str = fname.to_string_lossy();
    for (k, v) in &m.xattrs {
        sys::lsetxattr_at(dir.as_fd(), &fname_str, k, v).map_err(|source| UnpackError::Io {
            entry: entry.to_string(),
            action: "set extended attribute",
            source,
        })?;
    }
    nix::sys::stat::utimensat(
        dir,
        fname,
        &m.mtime,
        &m.mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io_at(entry, "set times"))?;
    Ok(())
}

fn remove_at(dir: &OwnedFd, fname: &OsStr, entry: &str) -> Result<(), UnpackError> {
    match stat_at(dir, fname) {
        None => Ok(()),
        Some(st) if is_type(&st, SFlag::S_IFDIR) => {
            let sub = openat(
                dir,
                fname,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_at(entry, "open directory to replace"))?;
            let names: Vec<std::ffi::OsString> = {
                let mut d =
                    nix::dir::Dir::from_fd(sub.try_clone().map_err(|source| UnpackError::Io {
                        entry: entry.to_string(),
                        action: "duplicate fd",
                        source,
                    })?)
                    .map_err(io_at(entry, "read directory to replace"))?;
                d.iter()
                    .filter_map(Result::ok)
                    .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
                    .filter(|n| n != "." && n != "..")
                    .collect()
            };
            for n in names {
                remove_at(&sub, &n, entry)?;
            }
            unlinkat(dir, fname, UnlinkatFlags::RemoveDir)
                .map_err(io_at(entry, "remove replaced directory"))
        }
        Some(_) => unlinkat(dir, fname, UnlinkatFlags::NoRemoveDir)
            .map_err(io_at(entry, "remove replaced file")),
    }
}

fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> TimeSpec {
    let secs = entry.header().mtime().unwrap_or(0);
    let mut nanos = 0i64;
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("mtime") {
                if let Ok(v) = ext.value() {
                    if let Some((_, frac)) = v.split_once('.') {
                        let digits: String = frac.chars().take(9).collect();
                        nanos = format!("{digits:0<9}").parse().unwrap_or(0);
                    }
                }
            }
        }
    }
    TimeSpec::new(i64::try_from(secs).unwrap_or(0), nanos)
}

/// Extended attributes from PAX `SCHILY.xattr.*` records. overlayfs's own
/// `trusted.overlay.*` attributes are refused: a layer must not forge
/// whiteouts or redirects.
fn entry_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Ok(out);
    };
    for ext in exts.flatten() {
        let Ok(key) = ext.key() else { continue };
        if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
            if attr.starts_with("trusted.overlay.") {
                return Err(reject(name, format!("sets overlayfs attribute {attr:?}")));
            }
            out.push((attr.to_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

fn header_dev<R: Read>(entry: &tar::Entry<'_, R>) -> Result<u64, UnpackError> {
    let h = entry.header();
    let major = h
        .device_major()
        .map_err(|source| UnpackError::Archive { source })?
        .unwrap_or(0);
    let minor = h
        .device_minor()
        .map_err(|source| UnpackError::Archive { source })?
        .unwrap_or(0);
    Ok(nix::sys::stat::makedev(u64::from(major), u64::from(minor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_strips_roots_and_dots_and_refuses_dotdot() {
        assert_eq!(
            clean_path(b"/etc/./passwd").unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(clean_path(b"./").unwrap(), PathBuf::new());
        assert!(clean_path(b"a/../b").is_err());
        assert!(clean_path(b"../../etc").is_err());
    }
}
