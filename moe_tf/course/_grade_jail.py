"""Starts one student's test process inside ``unshare`` namespaces (``moe-grade``'s OS sandbox).

Run as root by ``unshare --mount --net --pid --ipc --uts --fork --kill-child --mount-proc``, with the
path of a JSON plan; standard library only (it runs with ``python -I -S``). It

* makes every mount private to the new namespace;
* mounts a fresh size-limited tmpfs over ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (private, left behind
  nowhere) and an empty read-only one over each folder to hide (the reference solutions, the hidden
  tests, the submissions, the other students' grading folders), binding back only the paths the plan
  keeps (this student's grading folder, the Python installation, the course);
* makes every other mount read-only (a bind remount, flags kept), except the private tmpfs and the
  box's ``work/``, ``home/`` and ``tmp/``: a world-writable folder of the machine (``/run/lock``,
  say) is no channel from one student's process to the next, or from a hidden-test session to a
  visible one;
* joins the student's memory cgroup when the plan names one (all its processes together: the
  address-space limit below is per process);
* sets the resource limits (address space, processes, file size, core files, open files);
* drops to the student's own unprivileged user id (no account has it) with no supplementary groups, and
* replaces itself with the test command.

The network namespace has only a loopback interface that is down; the pid namespace dies with its
first process (the test process), so nothing the student starts outlives it.
"""

import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
# The per-mount flags a read-only bind remount must keep (mountinfo's fifth column names them).
MOUNT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
    "strictatime": 1 << 24,
}
# Kernel filesystems left as they are: nothing there is writable by the student's user, /dev's nodes are devices
# (and /dev/shm is the private tmpfs).
KERNEL = ("/proc", "/sys", "/dev")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)
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


def _unescape(field):
    """A mountinfo path: spaces, tabs, newlines and backslashes come as octal escapes."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_only_elsewhere(writable):
    """Remount read-only every mount but the kernel's and those in ``writable`` (paths and their mounts)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        mounts = [line.split() for line in fh]
    done = set()
    for fields in mounts:
        target, options = _unescape(fields[4]), fields[5].split(",")
        if target in done or target in writable or "ro" in options:
            continue
        if any(target == k or target.startswith(k + "/") for k in KERNEL):
            continue
        done.add(target)
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in options:
            flags |= MOUNT_FLAGS.get(opt, 0)
        mount(None, target, None, flags)


def main(plan_path):
    with open(plan_path, encoding="utf-8") as fh:
        plan = json.load(fh)
    if plan.get("cgroup_procs"):  # first, while /sys is still writable: this process and all it starts
        try:
            with open(plan["cgroup_procs"], "w") as fh:
                fh.write("0")  # "0": the writing process
        except OSError as err:
            print(
                f"moe-grade sandbox: no memory cgroup for this student ({err}); per-process limits only",
                file=sys.stderr,
                flush=True,
            )
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
                mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    writable = [t for t, _, w in plan["overlays"] if w and os.path.isdir(t)]
    for path in map(os.path.realpath, plan.get("writable", [])):  # own mounts: the one around them goes read-only
        mount(path, path, None, MS_BIND | MS_REC)
        writable.append(path)
    read_only_elsewhere(set(writable))
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
