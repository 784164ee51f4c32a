"""A real one-node SLURM for the tests: Debian's ``slurm-wlm`` and ``munge``, started locally.

:func:`start_cluster` installs the packages with ``apt-get`` when they are missing (root only),
writes a ``slurm.conf`` for this machine alone (2 CPUs, ``proctrack/linuxproc``, no cgroups,
``task/none``, a partition ``debias``, spool and state folders under a temporary folder, ports
picked free), starts ``munged`` (unless one already answers), ``slurmctld`` and ``slurmd`` and
waits until the node is idle. Clients find the cluster through ``SLURM_CONF``, which the
fixture sets for the test session. Anything that keeps it from starting is raised as
:class:`ClusterError` with the reason and the daemons' log tails: the tests using the fixture
then fail, they are never skipped (CI must not pass without exercising SLURM).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "debias"
CPUS = 2

CONF = """\
ClusterName=debiastest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
JobRequeue=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class ClusterError(RuntimeError):
    """The local SLURM could not be installed or started (the message says why)."""


@dataclass
class Cluster:
    """A running one-node SLURM: its config file, partition and the daemons this test started."""

    root: Path
    conf: Path
    partition: str = PARTITION
    started: list[subprocess.Popen | int] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> str:
        """A SLURM client command (``squeue``, ``scancel`` ...) against this cluster."""
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise ClusterError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {n}:\n{_tail(self.root / n)}" for n in ("slurmctld.log", "slurmd.log")
        )

    def stop(self) -> None:
        """Cancel this cluster's jobs, stop the daemons this fixture started (never one it
        found running)."""
        if _read_pid(self.root / "slurmctld.pid"):
            self.run("scancel", "--user", str(os.getuid()), check=False)
            for _ in range(100):
                if not self.run("squeue", "-h", "-t", "PD,R,CG", check=False).strip():
                    break
                time.sleep(0.2)
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            pid = _read_pid(self.root / pidfile)
            if pid:
                _terminate(pid)
        for proc in self.started:
            _terminate(proc if isinstance(proc, int) else proc.pid)


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _terminate(pid: int, wait_s: float = 10.0) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> None:
    """``apt-get install slurm-wlm munge`` when ``slurmctld`` is missing (needs root)."""
    if all(shutil.which(d, path=os.environ.get("PATH", "") + ":/usr/sbin") for d in DAEMONS):
        return
    if os.geteuid() != 0:
        raise ClusterError(
            f"SLURM is not installed and this is not root: apt-get install {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise ClusterError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-2000:]}")


def _munge_works() -> bool:
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        dec = subprocess.run(["unmunge"], input=enc.stdout, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return enc.returncode == 0 and dec.returncode == 0


def _start_munge(cluster: Cluster) -> None:
    if _munge_works():
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        shutil.chown(key, "munge", "munge")
    proc = subprocess.run(
        ["runuser", "-u", "munge", "--", "/usr/sbin/munged"], capture_output=True, text=True
    )
    if proc.returncode:
        raise ClusterError(f"munged did not start: {proc.stderr.strip()}")
    pid = _read_pid(Path("/run/munge/munged.pid"))
    if pid:
        cluster.started.append(pid)
    for _ in range(50):
        if _munge_works():
            return
        time.sleep(0.1)
    raise ClusterError("munged started but munge -n | unmunge does not work")


def _wait_idle(cluster: Cluster, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    state = ""
    while time.time() < deadline:
        out = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).strip()
        state = out or state
        if out.startswith("idle"):
            return
        time.sleep(0.5)
    raise ClusterError(f"the node never became idle (last state {state!r})\n{cluster.logs()}")


def start_cluster(root: Path) -> Cluster:
    """Install (if needed), configure and start a one-node SLURM under ``root``."""
    if os.uname().sysname != "Linux":
        raise ClusterError("the local SLURM needs Linux")
    install()
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        CONF.format(
            host=host,
            root=root,
            state=root / "state",
            spool=root / "spool",
            ctld_port=_free_port(),
            d_port=_free_port(),
            cpus=CPUS,
            partition=PARTITION,
        )
    )
    for d in ("state", "spool"):
        (root / d).mkdir(exist_ok=True)
    cluster = Cluster(root=root, conf=conf)
    try:
        _start_munge(cluster)
        for daemon in ("slurmctld", "slurmd"):
            # -i: ignore state files of an earlier cluster; -f: this config.
            proc = subprocess.run(
                [
                    f"/usr/sbin/{daemon}",
                    "-f",
                    str(conf),
                    *(["-i"] if daemon == "slurmctld" else []),
                ],
                capture_output=True,
                text=True,
                env=cluster.env(),
            )
            if proc.returncode:
                raise ClusterError(
                    f"{daemon} did not start: {proc.stderr.strip()}\n{cluster.logs()}"
                )
        _wait_idle(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The local one-node SLURM for the session, ``SLURM_CONF`` pointing at it; a cluster that
    cannot start fails the test with the reason (never a skip)."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterError as exc:
        pytest.fail(f"the local SLURM did not start: {exc}", pytrace=False)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
