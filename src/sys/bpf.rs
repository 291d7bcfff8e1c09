//! The two `bpf(2)` commands a cgroup v2 device allowlist needs: load a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program and attach it to a cgroup. The
//! program itself is built (pure, tested) in `runtime::cgroup::devices`;
//! this module only hands its instructions to the kernel.
//!
//! Why not aya: aya loads programs compiled to ELF objects by a BPF
//! toolchain; nodelet builds a few dozen instructions at run time from
//! the container's rules (as runc does with its own assembler), so a
//! loader crate would add a toolchain and buy nothing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_PROG_LOAD` and `BPF_PROG_ATTACH` (uapi/linux/bpf.h `enum bpf_cmd`).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
/// `BPF_PROG_TYPE_CGROUP_DEVICE` (`enum bpf_prog_type`).
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE` (`enum bpf_attach_type`).
const BPF_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`: other programs on the cgroup (or its parents) stay
/// in force; the kernel allows an access only when every one allows it.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction, `struct bpf_insn` (dst in the low nibble of
/// `regs`, src in the high one).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to
/// `expected_attach_type`; the kernel zero-fills what a shorter attr leaves out.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Verifier log kept when a load fails, for the error message.
const LOG_SIZE: usize = 16 * 1024;

/// Loads `insns` as a cgroup device program; the verifier's log is the
/// error message when it refuses.
pub fn load_device_program(insns: &[Insn]) -> io::Result<OwnedFd> {
    match prog_load(insns, None) {
        Ok(fd) => Ok(fd),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            let mut log = vec![0u8; LOG_SIZE];
            let again = prog_load(insns, Some(&mut log));
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            match again {
                Ok(fd) => Ok(fd),
                Err(e2) => Err(io::Error::new(e2.kind(), format!("{e2}; verifier: {text}"))),
            }
        }
        Err(e) => Err(e),
    }
}

fn prog_load(insns: &[Insn], log: Option<&mut Vec<u8>>) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    if let Some(buf) = log {
        attr.log_level = 1;
        attr.log_size = u32::try_from(buf.len()).unwrap_or(0);
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    // SAFETY: `attr` is a live, fully initialised bpf_attr prefix whose
    // size is passed; the instruction, license and log pointers in it point
    // into buffers that outlive the call, the log's length is its own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned a bad fd"))?;
    // SAFETY: the kernel just returned this new fd, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches device program `prog` to the cgroup (v2) directory `cgroup`.
/// The program stays attached as long as the cgroup exists.
pub fn attach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let fd = |f: BorrowedFd<'_>| u32::try_from(f.as_raw_fd()).unwrap_or(u32::MAX);
    let mut attr = ProgAttachAttr {
        target_fd: fd(cgroup),
        attach_bpf_fd: fd(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a live, initialised bpf_attr prefix of the size
    // passed; it only carries integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs the classic-BPF seccomp program `program` (`struct
/// sock_filter`s, 8 bytes each, as libseccomp exports them) on the calling
/// thread. Raw system call only: safe between fork or clone and exec.
pub fn seccomp_install(program: &[u8]) -> io::Result<()> {
    const FILTER_SIZE: usize = 8;
    if program.is_empty() || program.len() % FILTER_SIZE != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len() / FILTER_SIZE)
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: program.as_ptr().cast_mut().cast(),
    };
    // SAFETY: `prog` points at `len` sock_filters inside the live
    // `program` slice; the kernel copies them and does not write.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            std::ptr::from_ref(&prog),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
