"""A seccomp filter for the sandbox: system calls no task needs, refused with EPERM (nsjail's approach).

Two reasons. Memory outside the limits: System V shared memory and message queues (an IPC namespace's
segments outlive the process that made them and are counted by no rlimit) and `memfd_create`. Kernel
attack surface: the interfaces behind most unprivileged kernel exploits (bpf, userfaultfd, io_uring,
perf events, keyrings, ptrace and cross-process memory, namespaces and mounts, open_by_handle_at,
personality), none of which a pure-Python function needs. Everything else is allowed (a deny list).

The filter is classic BPF, built here byte by byte (no libseccomp), for x86-64 and AArch64; a call made
with another architecture's convention (32-bit `int 0x80` on x86-64, the x32 ABI) kills the process, so
the table cannot be sidestepped. Elsewhere `program()` is None and the sandbox runs without a filter.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

DENIED = (
    # memory that no rlimit counts
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop", "msgget", "msgsnd",
    "msgrcv", "msgctl", "memfd_create", "memfd_secret",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
    # kernel attack surface
    "bpf", "userfaultfd", "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register", "add_key",
    "request_key", "keyctl",
    "personality", "name_to_handle_at", "open_by_handle_at", "fanotify_init", "lookup_dcookie",
    "mbind", "set_mempolicy", "migrate_pages", "move_pages",
    # namespaces, mounts, the machine (most need capabilities the sandbox lacks anyway)
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick",
    "mount_setattr", "quotactl", "quotactl_fd", "swapon", "swapoff", "reboot", "sethostname", "setdomainname",
    "syslog", "acct", "vhangup",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "settimeofday",
    "clock_settime", "adjtimex",
    "clock_adjtime",
)

# from linux/asm/unistd_64.h (x86-64) and asm-generic/unistd.h (AArch64)
_X86_64 = {
    "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "ptrace": 101, "syslog": 103, "personality": 135,
    "vhangup": 153, "pivot_root": 155, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212,
    "semtimedop": 220, "clock_settime": 227, "mbind": 237, "set_mempolicy": 238, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages": 256, "unshare": 272, "move_pages": 279,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438,
    "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443, "memfd_secret": 447,
    # x86-only: port I/O and obsolete calls
    "iopl": 172, "ioperm": 173, "uselib": 134, "ustat": 136, "sysfs": 139, "_sysctl": 156,
}
_AARCH64 = {
    "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "vhangup": 58,
    "quotactl": 60, "acct": 89, "personality": 92, "unshare": 97, "kexec_load": 104, "init_module": 105,
    "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117, "reboot": 142,
    "sethostname": 161, "setdomainname": 162, "settimeofday": 170, "adjtimex": 171, "msgget": 186,
    "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "semget": 190, "semctl": 191, "semtimedop": 192, "semop": 193,
    "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197, "add_key": 217, "request_key": 218,
    "keyctl": 219, "swapon": 224, "swapoff": 225, "mbind": 235, "set_mempolicy": 237, "migrate_pages": 238,
    "move_pages": 239, "perf_event_open": 241, "fanotify_init": 262, "name_to_handle_at": 264,
    "open_by_handle_at": 265, "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270,
    "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "memfd_create": 279, "bpf": 280,
    "userfaultfd": 282, "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
    "quotactl_fd": 443, "memfd_secret": 447,
}
# machine → (AUDIT_ARCH_*, syscall table, lowest number of a foreign ABI sharing this arch value or None)
ARCHES = {"x86_64": (0xC000003E, _X86_64, 0x40000000), "aarch64": (0xC00000B7, _AARCH64, None)}

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_KILL_PROCESS, _ALLOW, _ERRNO = 0x80000000, 0x7FFF0000, 0x00050000


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


@functools.lru_cache(maxsize=4)
def program(machine: str | None = None) -> bytes | None:
    """The filter as the array of `struct sock_filter` that `bwrap --seccomp FD` loads; None if this
    architecture has no table here."""
    arch = ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit, table, foreign = arch
    nrs = sorted(set(table.values()))  # DENIED, and on x86-64 a few obsolete or port-I/O calls besides
    out = [_op(_LD_W_ABS, 4),                      # A = seccomp_data.arch
           _op(_JEQ_K, audit, jt=1),               # this architecture's convention: go on
           _op(_RET_K, _KILL_PROCESS),             # any other: kill
           _op(_LD_W_ABS, 0)]                      # A = seccomp_data.nr
    n = len(nrs)
    if foreign is not None:
        out.append(_op(_JGE_K, foreign, jt=n + 2))  # x32 numbers share x86-64's arch value: kill
    for i, nr in enumerate(nrs):
        out.append(_op(_JEQ_K, nr, jt=n - i))      # to the EPERM return
    out += [_op(_RET_K, _ALLOW), _op(_RET_K, _ERRNO | errno.EPERM)]
    if foreign is not None:
        out.append(_op(_RET_K, _KILL_PROCESS))
    return b"".join(out)
