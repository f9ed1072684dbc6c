"""Runs a command with some system calls refused, as a stricter systemd SystemCallFilter= would.

    deny_syscalls.py SYSCALL[,SYSCALL...] PROGRAM [ARG...]

Installs a seccomp filter (libseccomp through pyseccomp) that answers the named system calls
with EPERM and allows every other, then execs PROGRAM: the filter holds for it and its children.
"""
import errno
import os
import sys

import pyseccomp as seccomp


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    names, program = sys.argv[1].split(","), sys.argv[2:]
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in names:
        flt.add_rule(seccomp.ERRNO(errno.EPERM), name)
    flt.load()
    os.execv(program[0], program)


if __name__ == "__main__":
    main()
