"""Starts one student's test process inside ``unshare`` namespaces (``moe-grade``'s OS sandbox).

Run as root by ``unshare --mount --net --pid --ipc --uts --fork --kill-child --mount-proc``, with the
path of a JSON plan; standard library only (it runs with ``python -I -S``). It

* makes every mount private to the new namespace;
* mounts a fresh size-limited tmpfs over ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (private, left behind
  nowhere) and an empty read-only one over each folder to hide (the reference solutions, the hidden
  tests, the submissions, the other students' grading folders), binding back only the paths the plan
  keeps (this student's grading folder, the Python installation, the course);
* sets the resource limits (address space, processes, file size, core files, open files);
* drops to an unprivileged user (``nobody``) with no supplementary groups, and
* replaces itself with the test command.

The network namespace has only a loopback interface that is down; the pid namespace dies with its
first process (the test process), so nothing the student starts outlives it.
"""

import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def mount(source, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else os.fsencode(s))
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def overlay(target, keep, data, flags):
    """A tmpfs over ``target``, with the paths of ``keep`` (below it) bound back in."""
    fds = []
    for path in keep:
        try:
            fds.append((path, os.open(path, os.O_PATH | os.O_CLOEXEC)))
        except OSError:
            continue
    mount("tmpfs", target, "tmpfs", flags | MS_NOSUID | MS_NODEV, data)
    for path, fd in fds:
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def main(plan_path):
    with open(plan_path, encoding="utf-8") as fh:
        plan = json.load(fh)
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for target, keep, writable in sorted(plan["overlays"], key=lambda o: o[0].count("/")):
        if not os.path.isdir(target):
            continue
        size = plan.get("tmpfs_size", "64m")
        if writable:
            overlay(target, keep, f"mode=1777,size={size}", 0)
        else:
            overlay(target, keep, "mode=0755,size=1m", 0)
            if not keep:
                mount(None, target, None, 32 | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)  # MS_REMOUNT
    for name, value in plan.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, name), (value, value))
    uid = plan.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setgid(plan.get("gid", uid))
        os.setuid(uid)
    os.chdir(plan["cwd"])
    os.execve(plan["argv"][0], plan["argv"], os.environ)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as err:  # noqa: BLE001 - the grader reports the exit status and this line
        print(f"moe-grade sandbox: could not start the test process: {err}", file=sys.stderr, flush=True)
        os._exit(70)
