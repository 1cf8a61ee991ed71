"""A real single-node SLURM for the tests: Debian's slurm-wlm and munge, slurmctld + slurmd on
localhost with this machine's CPUs, everything (config, state, sockets, logs) under one temporary
folder, started as root without systemd and stopped at the end of the session.

Client commands find it through ``SLURM_CONF`` (``Cluster.run`` sets it; a test sets it for the CLI).
Where the packages cannot be installed or the daemons do not come up, ``start`` raises
``Unavailable`` with the reason, and the fixture skips with it.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


class Unavailable(RuntimeError):
    """No SLURM here, and why."""


def _run(command: list[str], timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def install() -> None:
    """apt-get the packages if a daemon is missing (update the package lists first only if needed)."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("slurm-wlm and munge are not installed, and apt-get as root is not available here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", *PACKAGES]
    proc = _run(command, timeout=600, env=env)
    if proc.returncode != 0:  # stale or missing package lists: update once, then try again
        _run(["apt-get", "update", "-o", "DPkg::Lock::Timeout=120"], timeout=600, env=env)
        proc = _run(command, timeout=600, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {tail[0]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, host: str, cpus: int, mem_mb: int, munge_socket: Path) -> str:
    port_ctl, port_d = _free_port(), _free_port()
    return f"""\
ClusterName=abtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={port_ctl}
SlurmdPort={port_d}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=defer_batch=0
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=60 State=UP
"""


@dataclass
class Cluster:
    root: Path
    conf: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return _run(list(command), timeout=timeout, env=self.env)

    def sinfo(self) -> str:
        return self.run("sinfo", "-h", "-o", "%T").stdout.strip()

    def stop(self) -> None:
        if len(self.procs) == len(DAEMONS) and self.procs[-1].poll() is None:  # jobs left by a failed test
            self.run("scancel", "--user", pwd.getpwuid(os.getuid()).pw_name)
            deadline = time.time() + 20
            while time.time() < deadline and self.run("squeue", "-h").stdout.strip():
                time.sleep(0.5)
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged: only the ones started here
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.root / name
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path.is_file() else ""


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 // 2  # half of it: the jobs share the machine with the tests
    return 1024


def start(root: Path, timeout: float = 60) -> Cluster:
    """Install if needed, write the configuration, start munged, slurmctld and slurmd, and wait
    until the node is idle. Raises Unavailable with the reason."""
    if os.geteuid() != 0:
        raise Unavailable("the test cluster runs its daemons as root (SlurmUser=root); not root here")
    install()
    sbin = lambda name: shutil.which(name) or str(Path("/usr/sbin", name))  # noqa: E731
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    os.chmod(key, 0o600)
    munge_socket = root / "munge" / "munge.socket.2"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, os.cpu_count() or 1, _mem_mb(), munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(root, conf, env)
    daemons = [
        [sbin("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
         f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munge' / 'munged.log'}",
         f"--seed-file={root / 'munge' / 'munged.seed'}"],
        [sbin("slurmctld"), "-D", "-i", "-f", str(conf)],
        [sbin("slurmd"), "-D", "-f", str(conf)],
    ]
    began = time.time()
    try:
        for command in daemons:
            log = open(root / f"{Path(command[0]).name}.out", "w")
            cluster.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                  start_new_session=True))
            if command[0].endswith("munged"):
                _wait(lambda: munge_socket.exists(), 10, cluster, "munged")
        _wait(lambda: cluster.sinfo() == "idle", timeout, cluster, "slurmd")
    except Unavailable:
        cluster.stop()
        raise
    cluster.started_in = time.time() - began
    return cluster


def _wait(ready, timeout: float, cluster: Cluster, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        dead = [p for p in cluster.procs if p.poll() is not None]
        if dead:
            name = Path(dead[0].args[0]).name
            raise Unavailable(f"{name} exited with {dead[0].returncode}: "
                              f"{cluster.log_tail(name + '.out') or cluster.log_tail(name + '.log')}")
        try:
            if ready():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.3)
    raise Unavailable(f"{what} did not come up in {timeout:.0f} s: sinfo says {cluster.sinfo()!r}; "
                      f"{cluster.log_tail('slurmctld.log')}")
