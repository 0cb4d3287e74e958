"""The smoke suite through SLURM (`--profile profiles/slurm`) on a one-node cluster on localhost.

The fixture installs Debian's slurm-wlm and munge when they are missing (apt-get; needs root or
sudo), then starts munged, slurmctld and slurmd from a temporary folder (own slurm.conf, sockets,
ports, spool and logs; nothing under /etc is changed) and stops them afterwards. The cluster has no
accounting database, so the run adds the plugin's no-accounting options (`--slurm-no-account`,
`--slurm-status-command squeue`), as profiles/slurm/config.yaml explains.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.workflow_helpers import copy_pipeline, job_counts, snakemake, tool_env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
PACKAGES = ("slurm-wlm", "munge")


def privileged() -> list[str] | None:
    """[] when root, ['sudo', '-n'] when passwordless sudo works, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_installed() -> None:
    """apt-get install slurm-wlm munge when a daemon is missing; skip with the reason when impossible."""
    if all(Path(d).is_file() for d in DAEMONS) and shutil.which("sbatch"):
        return
    prefix = privileged()
    if prefix is None or not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and cannot be (needs apt-get and root or passwordless sudo)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, capture_output=True, env=env, timeout=900).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], capture_output=True, env=env, timeout=900)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.skip(f"apt-get install {' '.join(PACKAGES)} failed (offline?): {proc.stderr.strip().splitlines()[-1:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.is_file())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


class Cluster:
    """munged + slurmctld + slurmd in `root`; `env` points the SLURM clients at it."""

    def __init__(self, root: Path):
        self.root, self.procs = root, []
        self.node = socket.gethostname().split(".")[0]
        for name in ("state", "spool", "log"):
            (root / name).mkdir(parents=True, exist_ok=True)
        self.munge_socket = root / "munge.socket"
        self.conf = root / "slurm.conf"
        self.logs = [root / "log" / n for n in ("munged.log", "slurmctld.log", "slurmd.log")]
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def write_config(self) -> None:
        cpus = os.cpu_count() or 2
        memory = 4000 * cpus  # advertised to the scheduler only: the smoke jobs ask for 2000 MB each
        self.conf.write_text(f"""\
ClusterName=hifa-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self) -> None:
        self.write_config()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.spawn(["/usr/sbin/munged", "-F", "-f", f"--socket={self.munge_socket}", f"--key-file={key}",
                    f"--pid-file={self.root / 'munged.pid'}", f"--seed-file={self.root / 'munged.seed'}",
                    f"--log-file={self.logs[0]}"])
        wait_for(self.munge_socket.exists, 30, "munged", self.logs)
        self.spawn(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)])
        wait_for(lambda: self.query(["scontrol", "ping"]).count("UP") >= 1, 60, "slurmctld", self.logs)
        self.spawn(["/usr/sbin/slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        wait_for(lambda: self.query(["sinfo", "-h", "-o", "%t"]).strip() in ("idle", "mix", "alloc"), 90, "an idle node", self.logs)

    def spawn(self, args: list[str]) -> None:
        log = open(self.root / "log" / f"{Path(args[0]).name}.stdout", "wb")
        self.procs.append(subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def query(self, args: list[str]) -> str:
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)
        return proc.stdout

    def stop(self) -> None:
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged: each by its own pid
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ensure_installed()
    if privileged() != []:
        pytest.skip("the test cluster's daemons run as root (SlurmUser=root); run the test as root")
    # Short socket paths: unix sockets are limited to ~100 characters.
    cluster = Cluster(Path(tmp_path_factory.mktemp("slurm")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def srun_wrapper(folder: Path, conf: Path) -> Path:
    """An `srun` that knows the test cluster's slurm.conf. Inside a job, snakemake-executor-plugin-
    slurm-jobstep drops every SLURM_* variable but the job's identity before its nested `srun`,
    SLURM_CONF included, so srun would look for /etc/slurm/slurm.conf (a real cluster's config sits
    there or is served configless). The test leaves /etc alone and wraps srun instead."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "srun"
    wrapper.write_text(f"#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which('srun')} \"$@\"\n")
    wrapper.chmod(0o755)
    return folder


def test_smoke_suite_runs_through_slurm(cluster, tmp_path):
    repo = copy_pipeline(tmp_path / "repo")
    smoke = repo / "config/suites/smoke.yaml"  # one seed: the SLURM path is the subject here, the seeds are tested in test_workflow
    text = smoke.read_text()
    assert "\n    seeds: [0, 1]" in text
    smoke.write_text(text.replace("\n    seeds: [0, 1]", "\n    seeds: [0]", 1))
    env = tool_env(SLURM_CONF=str(cluster.conf))
    env["PATH"] = f"{srun_wrapper(tmp_path / 'bin', cluster.conf)}{os.pathsep}{env['PATH']}"
    proc = snakemake(
        ["--profile", "profiles/slurm", "--configfile", "config/suites/smoke.yaml", "--jobs", "2",
         "--slurm-no-account", "--slurm-status-command", "squeue",
         # test speed only: poll every few seconds (default: 40 s after each change), keep the job logs
         "--slurm-init-seconds-before-status-checks", "3", "--slurm-keep-successful-logs", "--latency-wait", "10"],
        repo, env=env, timeout=1500, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:] + "\n" + "\n".join(p.read_text()[-3000:] for p in cluster.logs if p.is_file())
    counts = job_counts(output)
    assert counts["train"] == 2 and counts["report"] == 1
    # Every non-local job went through sbatch: Snakemake names the SLURM job ids it submitted, and
    # slurmctld allocated exactly those.
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    remote_jobs = sum(n for rule, n in counts.items() if rule not in ("all", "suite_manifest", "suite_prompts"))
    assert len(submitted) == remote_jobs, output[-4000:]
    ctld = (cluster.root / "log" / "slurmctld.log").read_text()
    allocated = set(re.findall(r"sched: Allocate JobId=(\d+)", ctld)) | set(re.findall(r"JobId=(\d+) .*WEXITSTATUS 0", ctld))
    assert submitted <= allocated, (submitted, ctld[-3000:])
    slurm_logs = {p.stem: p for p in (repo / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert submitted <= set(slurm_logs)  # one SLURM log per job id, under slurm_logs/rule_<rule>/...
    trains = [p for p in slurm_logs.values() if "rule_train" in p.parts]
    assert len(trains) == 2 and all("Finished jobid" in p.read_text() for p in trains)
    assert (repo / "results/smoke/report/index.html").is_file()
    assert (repo / "results/smoke/runs/hifa/a-dslr-photo-of-a-corgi/eval/metrics.json").is_file()
