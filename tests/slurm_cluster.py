"""A real one-node Slurm cluster for the executor's tests (../shared/research/slurm.md's recipe): MUNGE, slurmctld and
slurmd from Debian's packages (`make test` installs them when missing), configured in a scratch folder on ports of
its own, stopped by the PIDs it wrote. Client commands find it through $SLURM_CONF."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF = """ClusterName=s2dtest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
KillWait=5
# a requeued job is started by the backfill pass (every 30 s by default): the test's requeue waited 18 s for it
SchedulerParameters=bf_interval=1,sched_interval=1
NodeName={host} CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge() -> None:
    """MUNGE's daemon, started once per machine (it may serve another cluster already)."""
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return
    for d in ("/etc/munge", "/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    subprocess.run(["chown", "-R", "munge:munge", "/etc/munge", "/run/munge", "/var/log/munge", "/var/lib/munge"], check=True)
    key.chmod(0o400)
    subprocess.run(["/usr/sbin/munged", "--force"], check=True)


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.conf = folder / "slurm.conf"

    def start(self) -> "Cluster":
        if shutil.which("slurmctld", path="/usr/sbin:/usr/bin") is None:
            raise RuntimeError("Slurm is not installed: `make test` installs it (apt-get install slurmctld slurmd slurm-client munge)")
        _munge()
        for sub in ("state", "spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 1024 - 1024
        self.conf.write_text(CONF.format(host=host, ctld_port=_free_port(), d_port=_free_port(), dir=self.dir, cpus=os.cpu_count(),
                                         mem=mem))
        os.environ["SLURM_CONF"] = str(self.conf)
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(self.conf)], check=True)
        time.sleep(1)
        subprocess.run(["/usr/sbin/slurmd", "-f", str(self.conf)], check=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster's node never came up: {out.stdout} {out.stderr}; logs in {self.dir / 'log'}")

    def stop(self) -> None:
        for name in ("slurmd.pid", "slurmctld.pid"):
            pid_file = self.dir / name
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        os.environ.pop("SLURM_CONF", None)
