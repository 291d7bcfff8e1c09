//! The device allowlist of a container (OCI `linux.resources.devices`):
//! which device nodes it may create (`m`), read (`r`) and write (`w`).
//!
//! Without it a container's root keeps `CAP_MKNOD` and can make and open
//! the host's disks. runc, crun and containerd put every container behind
//! the same default list (runc `libcontainer/specconv` `AllowedDevices`):
//! deny everything, then allow `mknod` of any node but opening only the
//! harmless ones below. cgroup v1 enforces it with the `devices`
//! controller (`devices.deny`/`devices.allow` lines); cgroup v2 has no
//! such files, only a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to
//! the cgroup, built here from the same rules.

use serde::{Deserialize, Serialize};

/// One rule, as OCI's `LinuxDeviceCgroup`: `kind` is `a` (any), `b` or
/// `c`; a missing major or minor is the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    #[serde(rename = "type", default = "any_kind")]
    pub kind: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    #[serde(default = "all_access")]
    pub access: String,
}

fn any_kind() -> char {
    'a'
}

fn all_access() -> String {
    "rwm".into()
}

/// A rule of [`DEFAULT`]: allow, kind, major, minor, access.
type Rule = (bool, char, Option<i64>, Option<i64>, &'static str);

const fn rule(
    allow: bool,
    kind: char,
    major: Option<i64>,
    minor: Option<i64>,
    access: &'static str,
) -> Rule {
    (allow, kind, major, minor, access)
}

/// The default list: runc's `AllowedDevices` (what containerd and crun give
/// a non-privileged container), plus `/dev/console` and `/dev/fuse`.
const DEFAULT: &[Rule] = &[
    rule(false, 'a', None, None, "rwm"),
    // mknod of any node; opening one needs a rule below.
    rule(true, 'c', None, None, "m"),
    rule(true, 'b', None, None, "m"),
    rule(true, 'c', Some(1), Some(3), "rwm"),    // /dev/null
    rule(true, 'c', Some(1), Some(5), "rwm"),    // /dev/zero
    rule(true, 'c', Some(1), Some(7), "rwm"),    // /dev/full
    rule(true, 'c', Some(1), Some(8), "rwm"),    // /dev/random
    rule(true, 'c', Some(1), Some(9), "rwm"),    // /dev/urandom
    rule(true, 'c', Some(5), Some(0), "rwm"),    // /dev/tty
    rule(true, 'c', Some(5), Some(1), "rwm"),    // /dev/console
    rule(true, 'c', Some(5), Some(2), "rwm"),    // /dev/ptmx
    rule(true, 'c', Some(136), None, "rwm"),     // /dev/pts/*
    rule(true, 'c', Some(10), Some(200), "rwm"), // /dev/net/tun
    rule(true, 'c', Some(10), Some(229), "rwm"), // /dev/fuse
];

/// The rules of a non-privileged container.
pub fn default_rules() -> Vec<DeviceRule> {
    DEFAULT
        .iter()
        .map(|&(allow, kind, major, minor, access)| DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: access.into(),
        })
        .collect()
}

/// The rules of a privileged container: every device.
pub fn allow_all() -> Vec<DeviceRule> {
    vec![DeviceRule {
        allow: true,
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".into(),
    }]
}

impl DeviceRule {
    /// Every device, every access (`a *:* rwm`).
    fn is_everything(&self) -> bool {
        self.kind == 'a'
            && self.major.is_none()
            && self.minor.is_none()
            && ['r', 'w', 'm'].iter().all(|c| self.access.contains(*c))
    }

    /// The cgroup v1 line: `c 1:3 rwm`, `a` for everything.
    pub fn v1_line(&self) -> String {
        if self.is_everything() {
            return "a".into();
        }
        let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }

    /// The rule's access as the device program's bit mask.
    fn access_bits(&self) -> i32 {
        self.access.chars().fold(0, |m, c| {
            m | match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => 0,
            }
        })
    }
}

/// Whether `rules` leave every device open (nothing to enforce).
pub fn allows_everything(rules: &[DeviceRule]) -> bool {
    match rules.iter().rposition(|r| r.is_everything()) {
        Some(i) => rules[i].allow && rules[i + 1..].iter().all(|r| r.allow),
        None => rules.iter().all(|r| r.allow),
    }
}

/// Checks what the kernel would refuse, with the rule's index.
pub fn validate(rules: &[DeviceRule]) -> Result<(), String> {
    for (i, r) in rules.iter().enumerate() {
        if !matches!(r.kind, 'a' | 'b' | 'c') {
            return Err(format!("devices[{i}]: type {:?} is not a, b or c", r.kind));
        }
        if r.access.is_empty() || !r.access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(format!(
                "devices[{i}]: access {:?} is not made of r, w and m",
                r.access
            ));
        }
        for n in [r.major, r.minor].into_iter().flatten() {
            if !(0..=i64::from(u32::MAX)).contains(&n) {
                return Err(format!("devices[{i}]: device number {n} is out of range"));
            }
        }
    }
    Ok(())
}

/// [`validate`] as the error of cgroup `path`.
pub fn checked(path: &str, rules: &[DeviceRule]) -> Result<(), super::CgroupError> {
    validate(rules).map_err(|message| super::CgroupError::Other {
        path: path.into(),
        message,
    })
}

// uapi/linux/bpf.h: `struct bpf_cgroup_dev_ctx { u32 access_type; u32
// major; u32 minor; }`, access_type = (access << 16) | type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

use crate::sys::bpf::Insn;

// The few eBPF opcodes the program needs (uapi/linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // wdst &= imm
const ALU32_RSH_K: u8 = 0x74; // wdst >>= imm
const ALU32_MOV_X: u8 = 0xbc; // wdst = wsrc
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto +off
const JMP_JEQ_K: u8 = 0x15; // if dst == imm goto +off
const JMP_EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The device program for `rules`: the last rule that matches an access
/// decides it (cgroup v1's order), and an access no rule matches is
/// allowed, as in a v1 cgroup that was never restricted; the lists
/// nodelet makes start with "deny everything", so that default is never
/// reached for them. Returns 1 (allow) or 0 (deny).
///
/// Registers: r2 type, r3 access, r4 major, r5 minor, r1 scratch.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // The rule's tests; each jump (offset filled in below) skips to
        // the next rule when its test fails.
        let mut block = Vec::new();
        match r.kind {
            'b' => block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)),
            'c' => block.push(insn(JMP_JNE_K, 2, 0, 0, DEV_CHAR)),
            _ => {}
        }
        let bits = r.access_bits();
        if r.allow {
            // Allowed when every requested bit is in the rule.
            if bits != ACC_MKNOD | ACC_READ | ACC_WRITE {
                block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
                block.push(insn(ALU32_AND_K, 1, 0, 0, !bits & 7));
                block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
            }
        } else {
            // Denied when any requested bit is in the rule.
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, bits));
            block.push(insn(JMP_JEQ_K, 1, 0, 0, 0));
        }
        if let Some(major) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, 0, i32::try_from(major).unwrap_or(-1)));
        }
        if let Some(minor) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, 0, i32::try_from(minor).unwrap_or(-1)));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if matches!(ins.code, JMP_JNE_K | JMP_JEQ_K) {
                ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod tests {
    use super::*;

    /// Runs `program` on one access, as the kernel would: a tiny
    /// interpreter of the opcodes above, so the program's logic is tested
    /// without a kernel (the integration tests load it for real).
    fn run(p: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_JEQ_K => {
                    if r[dst] == i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_default_list_allows_mknod_of_anything_but_opens_only_the_safe_nodes() {
        let p = program(&default_rules());
        // mknod of the host's loop0 (b 7:0) and loop-control (c 10:237): allowed.
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 7, 0), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 10, 237), 1);
        // Opening them: refused.
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 7, 0), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 10, 237), 0);
        // The safe ones open.
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 4),
            (10, 200),
            (10, 229),
        ] {
            assert_eq!(
                run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, maj, min),
                1,
                "c {maj}:{min}"
            );
        }
        // /dev/null as a block device is not /dev/null.
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 3), 0);
    }

    #[test]
    fn the_last_matching_rule_decides() {
        let mut rules = default_rules();
        rules.push(DeviceRule {
            allow: false,
            kind: 'c',
            major: Some(1),
            minor: Some(3),
            access: "w".into(),
        });
        let p = program(&rules);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 3), 0);
    }

    #[test]
    fn a_privileged_list_enforces_nothing() {
        assert!(allows_everything(&allow_all()));
        assert!(allows_everything(&[]));
        assert!(!allows_everything(&default_rules()));
        assert_eq!(run(&program(&allow_all()), DEV_BLOCK, ACC_READ, 8, 0), 1);
    }

    #[test]
    fn v1_lines_are_the_kernels_syntax() {
        let lines: Vec<String> = default_rules().iter().map(DeviceRule::v1_line).collect();
        assert_eq!(lines[0], "a");
        assert_eq!(lines[1], "c *:* m");
        assert_eq!(lines[3], "c 1:3 rwm");
        assert_eq!(lines[11], "c 136:* rwm");
    }

    #[test]
    fn bad_rules_are_named() {
        let mut r = default_rules();
        r[2].access = "x".into();
        assert_eq!(
            validate(&r).unwrap_err(),
            "devices[2]: access \"x\" is not made of r, w and m"
        );
    }
}
