//! Thin wrappers over the syscalls nix does not cover. The only module
//! allowed `unsafe`; each block does one operation and says why it is sound.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `lsetxattr` on `name` inside directory `dir`, without following a
/// symlink at `name`. The path goes through `/proc/self/fd/<dir>`, the
/// kernel's own handle for the directory, so no component of it can be
/// swapped for a symlink by the content being unpacked.
pub fn lsetxattr_at(dir: BorrowedFd<'_>, name: &str, key: &str, value: &[u8]) -> io::Result<()> {
    let path = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let key = CString::new(key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both pointers come from live CStrings and the value pointer and
    // length from a live slice; lsetxattr only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr` on `name` inside `dir` (see [`lsetxattr_at`]); `None` when
/// the attribute is absent.
pub fn lgetxattr_at(dir: BorrowedFd<'_>, name: &str, key: &str) -> io::Result<Option<Vec<u8>>> {
    let path = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let key = CString::new(key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the pointers come from live CStrings and a live, writable
    // buffer whose length is passed; the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            key.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc >= 0 {
        buf.truncate(usize::try_from(rc).unwrap_or(0));
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// `llistxattr` on `name` inside `dir`: the attribute names.
pub fn llistxattr_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<String>> {
    let path = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the path pointer comes from a live CString and the buffer is
    // live and writable for the length passed.
    let rc = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(usize::try_from(rc).unwrap_or(0));
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}
