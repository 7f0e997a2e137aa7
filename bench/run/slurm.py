"""``hydra/launcher=slurm_1gpu|slurm_cpu`` — sweeps on a Slurm cluster.

hydra-submitit-launcher's launcher (each job of the sweep one task of a Slurm job array; a job that reaches
its time limit is requeued by submitit and resumes from its finished blocks), plus what a sweep on a
cluster needs:

* **every job is checked before anything is submitted** (its run spec, bench/run/spec.py; only whether its
  device exists is left to the node it runs on): a job that would be refused is not submitted, gets its
  ``FAILED`` with the reason and is listed when the sweep is collected (the dataset must therefore be
  readable from the machine that submits, as on any cluster with a shared file system);
* **nothing finished is submitted again**: a job whose folder holds a finished run of the same
  configuration and code (and ``resume=true``) is reported as finished without asking Slurm for anything
  (the model's weights are checked only by the job itself: after replacing weights in place, use
  ``resume=false``);
* **the request is tried before anything is submitted** (``sbatch --test-only`` with the array's own
  options), and while waiting, a pending reason that never clears by itself (``PartitionConfig``,
  ``PartitionTimeLimit``, ``…PerJobLimit`` …) cancels the array: one line naming the limit, exit status 2;
* **sbatch's refusals** (an unknown partition, a GPU request on a partition without GPUs …): one line,
  exit status 2;
* **a job that Slurm ends** (cancelled, out of memory, node failure, time limit after the last requeue) is
  reported like a failed job: the others are waited for, the sweep is collected, the job is listed with
  Slurm's state, exit status 1. The same command then resumes it from its finished blocks.

Hydra instantiates launchers only from its plug-in registry, under ``hydra_plugins.``: ``register()``
(called by bench/run/cli.py before Hydra starts) enters this class there as ``TARGET``, the
``_target_`` of conf/hydra/launcher/slurm_*.yaml.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf, open_dict

from ..checks import writable_dir
from ..errors import BenchError

log = logging.getLogger("bench")

TARGET = "hydra_plugins.bench_slurm.SlurmLauncher"

#: Pending reasons that no amount of waiting clears: the request exceeds what the partition, QOS or
#: association allows one job (``squeue -o %r``; Slurm's "Job Reason Codes").
NEVER = re.compile(r"^(PartitionConfig|PartitionTimeLimit|PartitionNodeLimit|BadConstraints|InvalidAccount|InvalidQOS"
                   r"|MissingQOS|DependencyNeverSatisfied|(QOS|Assoc)\w*Per(Job|Node)\w*)$")


def register() -> None:
    """Enter ``SlurmLauncher`` into Hydra's plug-in registry as ``TARGET`` (idempotent)."""
    from hydra.core.plugins import Plugins

    Plugins.instance().class_name_to_class[TARGET] = SlurmLauncher


@dataclass
class Ended:
    """Jobs of the last sweep that Slurm ended (read by the collect callback, bench/run/cli.py)."""

    by_dir: dict[str, str] = field(default_factory=dict)         # job folder → "CANCELLED by Slurm (job 7_1)"
    by_overrides: dict[frozenset, str] = field(default_factory=dict)

    def clear(self) -> None:
        self.by_dir.clear()
        self.by_overrides.clear()

    def reason(self, path: Path | None, overrides: Sequence[str]) -> str | None:
        if path is not None and str(Path(path).resolve()) in self.by_dir:
            return self.by_dir[str(Path(path).resolve())]
        return self.by_overrides.get(frozenset(overrides))


ENDED = Ended()


@dataclass
class _Planned:
    idx: int
    overrides: list[str]
    folder: Path
    submit: bool
    note: str = ""


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """The submitit Slurm launcher with the checks above; the job side (``__call__``, ``checkpoint``) is
    submitit's."""

    poll_s: float = 30.0  # the longest wait between two looks at the queue

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        check_settings({k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                        for k, v in dict(self.params).items()})
        writable_dir("hydra.sweep.dir", sweep_dir)  # the jobs' folders: checked before any job is planned
        planned = [self._plan(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        todo = [p for p in planned if p.submit]
        for p in planned:
            log.info("\t#%d : %s%s", p.idx, " ".join(filter_overrides(p.overrides)), p.note)
        if todo:
            executor = self._executor()
            self._try_request(executor)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            jobs = self._submit(executor, todo)
            log.info("Slurm job array %s: %d job(s) submitted; waiting for them (Ctrl-C leaves them running: "
                     "python -m bench.collect %s once they end)", jobs[0].job_id.split("_")[0], len(jobs), sweep_dir)
            self._wait(jobs)
            ended = [p for p, job in zip(todo, jobs) if not self._outcome(p, job)]
            _wait_for_release([p.folder for p in ended])
        return [JobReturn(overrides=p.overrides, status=JobStatus.COMPLETED, _return_value=None) for p in planned]

    # -- before submitting ---------------------------------------------------------------------------
    def _plan(self, overrides: list[str], idx: int) -> _Planned:
        """The job's folder, and whether to submit it: not when its spec is refused (FAILED is written, as
        the job itself would) or when the folder holds a finished run of this job."""
        from ..errors import cli_error_line
        from .config import hydra_record
        from .jobdir import JobDir
        from .spec import build_spec

        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.num = idx
        folder = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        task = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
        try:
            spec = build_spec(task, here=False)
        except BenchError as exc:
            line = cli_error_line(exc)
            JobDir(folder).mark_failed(line, hydra_record(task, sweep_config.hydra))
            print(f"{line} (job {folder}; not submitted, the sweep goes on)", file=sys.stderr)
            return _Planned(idx, overrides, folder, False, "  (refused: not submitted)")
        if spec.resume and _finished_run(folder, spec):
            return _Planned(idx, overrides, folder, False, "  (finished already: not submitted)")
        return _Planned(idx, overrides, folder, True)

    def _executor(self):
        """A submitit executor with this launcher's parameters (as hydra-submitit-launcher sets them)."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        return executor

    def _try_request(self, executor) -> None:
        """``sbatch --test-only`` with the array's options: a request the partition can never run (too many
        CPUs, too much memory, GPUs where there are none, a time above its limit) ends here, in one line."""
        text = executor._executor._make_submission_file_text("true", "test-only")  # the array's own #SBATCH lines
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
            f.write(text)
        try:
            done = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise BenchError("hydra/launcher=slurm_*: sbatch is not on PATH; run the sweep on a machine of the "
                             "Slurm cluster (a login node), or use hydra/launcher=joblib here") from None
        except subprocess.TimeoutExpired:
            raise BenchError("sbatch --test-only did not answer within 120 s: is slurmctld up? (sinfo)") from None
        finally:
            Path(f.name).unlink(missing_ok=True)
        if done.returncode != 0:
            raise BenchError(self._refusal(_slurm_error(done.stderr + done.stdout), "sbatch --test-only"))
        acct = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=120)
        if acct.returncode != 0:  # submitit reads job states with sacct: a job Slurm kills would never be seen to end
            log.warning("sacct does not answer (%s): a job that Slurm kills will not be seen to end and this command "
                        "would wait for it; Ctrl-C then leaves the jobs running (python -m bench.collect <sweep dir>)",
                        _slurm_error(acct.stderr + acct.stdout))

    def _submit(self, executor, todo: list[_Planned]) -> list:
        job_params = [(p.overrides, "hydra.sweep.dir", p.idx, f"job_id_for_{p.idx}", Singleton.get_state())
                      for p in todo]
        quiet = io.StringIO()
        try:
            with contextlib.redirect_stderr(quiet):  # submitit prints sbatch's stderr before raising it
                return executor.map_array(self, *zip(*job_params))
        except Exception as exc:
            if type(exc).__module__.split(".")[0] != "submitit":
                raise
            raise BenchError(self._refusal(_slurm_error(str(exc) or quiet.getvalue()), "sbatch")) from None

    def _refusal(self, slurm_says: str, who: str) -> str:
        limit = _limit(self.params)
        return (f"Slurm refuses the sweep's jobs ({who}: {slurm_says})" + (f": {limit}" if limit else "") +
                "; nothing was submitted — change hydra.launcher.* (conf/hydra/launcher/) to fit the partition")

    # -- waiting ---------------------------------------------------------------------------------------
    def _wait(self, jobs: list) -> None:
        """Until every job has ended (``sacct``, one call per look for all jobs); a job pending for a reason
        that never clears cancels the array."""
        start = time.monotonic()
        watcher = type(jobs[0]).watcher
        arrays = sorted({j.job_id.split("_")[0] for j in jobs})
        while True:
            watcher.update()
            if all(j.paths.result_pickle.exists() or watcher.is_done(j.job_id, mode="cache") for j in jobs):
                return
            stuck = _never_starting(arrays)
            if stuck:
                subprocess.run(["scancel", *arrays], capture_output=True)
                job_id, reason = stuck
                limit = _limit(self.params)
                raise BenchError(f"Slurm job {job_id} waits for a reason that never clears ({reason}: the request "
                                 f"exceeds what the partition allows one job)" + (f": {limit}" if limit else "") +
                                 "; the array was cancelled — change hydra.launcher.* to fit the partition")
            time.sleep(min(self.poll_s, max(1.0, (time.monotonic() - start) / 8)))

    def _outcome(self, p: _Planned, job) -> bool:
        """Whether the job returned; one that ended without a result was ended by Slurm (or crashed): say
        so, and remember it for the report."""
        if job.paths.result_pickle.exists():
            try:
                job.results()
                return True
            except Exception as exc:  # the job's own exception (the app catches user errors itself)
                state = f"FAILED ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})"
        else:
            state = job.watcher.get_state(job.job_id, mode="cache")  # e.g. "CANCELLED by 1000", "OUT_OF_MEMORY"
        text = f"ended by Slurm: {state} (job {job.job_id}; log {job.paths.stderr})"
        ENDED.by_dir[str(p.folder.resolve())] = text
        ENDED.by_overrides[frozenset(p.overrides)] = text
        log.error("job #%d (%s) %s", p.idx, " ".join(filter_overrides(p.overrides)), text)
        return False


# ------------------------------------------------------------------------------------------ settings

#: what a value written into the sbatch script may hold: Slurm's names, times, sizes, lists and node ranges
#: (``gpu:a100:2``, ``1-00:00:00``, ``16G``, ``node[01-04]``, ``a@b.org``) — no space, quote, ``$``, backtick,
#: ``;``, newline or other control character; ``constraint`` also Slurm's ``&|()!`` operators
_SBATCH_VALUE = re.compile(r"^[A-Za-z0-9_.,:=@+/%*\[\]-]*$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,:=@+/%*\[\]&|()!-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: the launcher's counts and durations (submitit writes them as #SBATCH numbers): integers ≥ the bound
_COUNTS = {"timeout_min": 1, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "cpus_per_gpu": 1,
           "gpus_per_node": 0, "gpus_per_task": 0, "array_parallelism": 1, "max_num_timeout": 0, "signal_delay_s": 0}


def check_settings(params: dict[str, Any]) -> None:
    """Every launcher setting, before anything is planned or written: values that go into ``#SBATCH`` lines or
    the srun command match ``_SBATCH_VALUE``; ``setup``/``teardown`` are the user's own shell lines, one line
    each (no newline or control character). One line naming the setting otherwise."""
    def bad(name: str, value: Any, why: str) -> BenchError:
        rule = ("each is written into the job script as one line" if name.startswith(("setup", "teardown")) else
                "a Slurm setting is written into the job script, so it may not hold newlines, spaces, quotes or "
                "shell characters")
        return BenchError(f"hydra.launcher.{name}={value!r} {why}; {rule}")

    def value_ok(name: str, value: Any) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(name, value, "is not a finite number")
            return
        if not isinstance(value, str):
            raise bad(name, value, "is not a plain value")
        pattern = _CONSTRAINT if name.endswith("constraint") else _SBATCH_VALUE
        if not pattern.fullmatch(value):  # (match's $ would let a final newline pass)
            raise bad(name, value, "holds a character Slurm settings never need")

    for key, value in params.items():
        if key in ("setup", "teardown"):
            for i, line in enumerate(value or []):
                if not isinstance(line, str) or _CONTROL.search(line):
                    raise bad(f"{key}[{i}]", line, "must be one shell line")
        elif key in ("additional_parameters", "srun_args"):
            items = (value or {}).items() if isinstance(value, dict) else enumerate(value or [])
            for k, v in items:
                if isinstance(k, str) and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k):
                    raise bad(f"{key}[{k!r}]", v, "has a name that is not an sbatch option")
                value_ok(f"{key}.{k}" if isinstance(k, str) else f"{key}[{k}]", v)
        elif key in ("submitit_folder", "_target_"):
            if not isinstance(value, str) or _CONTROL.search(value):
                raise bad(key, value, "must be one line")
        elif isinstance(value, (list, tuple, dict)):
            raise bad(key, value, "must be a single value")
        elif key in _COUNTS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < _COUNTS[key]:
                raise BenchError(f"hydra.launcher.{key} must be an integer ≥ {_COUNTS[key]} (or null), got {value!r}")
        elif key == "mem_gb" and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise BenchError(f"hydra.launcher.mem_gb must be a number of gigabytes > 0 (or null), got {value!r}")
        else:
            value_ok(key, value)


# ------------------------------------------------------------------------------------------ helpers

def _finished_run(folder: Path, spec) -> bool:
    """Whether ``folder`` holds a finished run of ``spec``'s configuration and code (bench/run/identity.py)."""
    from . import jobdir
    from .identity import JOB_FORMAT, code_sha, data_sha, incompatibility, inputs_sha, library_versions

    st = jobdir.status(folder)
    if st.status != "finished" or st.manifest is None:
        return False
    # (the model is not loaded here: its weights and architecture are checked by the job itself)
    new = dict(format=JOB_FORMAT, shard=spec.shard, num_shards=spec.num_shards,
               run_config=json.loads(json.dumps(spec.run_config(), default=str)),
               code_sha=code_sha(spec.method.obj, spec.dataset.obj, *spec.protocols),
               model_sha=st.manifest.get("model_sha"), data_sha=data_sha(spec.dataset.obj, spec.n_images),
               libraries=library_versions(spec))
    inputs = inputs_sha(spec)
    if inputs:
        new["inputs_sha"] = inputs
    return incompatibility(st.manifest, new) is None


def _wait_for_release(folders: list[Path], timeout_s: float = 60.0) -> None:
    """Give the processes of jobs Slurm ended a moment to exit (SIGTERM, then SIGKILL after KillWait), so that
    the collection sees them gone rather than still running."""
    from .lock import JobLock

    end = time.monotonic() + timeout_s
    while folders and time.monotonic() < end:
        folders = [f for f in folders if JobLock(f).live_holder() is not None]
        if folders:
            time.sleep(0.5)


def _slurm_error(text: str) -> str:
    """Slurm's own words from sbatch's output: its last ``error:`` line, without the prefix."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failure" in ln.lower()]
    line = (errors or lines or ["no message"])[-1]
    return re.sub(r"^(sbatch: )?(error: )?(Batch job submission failed: )?", "", line)


def _never_starting(arrays: list[str]) -> tuple[str, str] | None:
    """(job id, reason) of a pending job of ``arrays`` whose reason never clears, or None."""
    done = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(arrays)], capture_output=True,
                          text=True)
    for line in done.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        if state == "PENDING" and NEVER.match(reason.strip()):
            return job_id, reason.strip()
    return None


def _limit(params: dict[str, Any]) -> str:
    """Which requested resource exceeds every node of the partition (``sinfo``), e.g. "cpus_per_task=8
    but its nodes have at most 2 CPUs"; "" when none can be named."""
    partition = params.get("partition")
    cmd = ["sinfo", "-h", "-o", "%P|%c|%m|%G|%l"] + (["-p", str(partition)] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    rows = [ln.split("|") for ln in out.splitlines() if ln.count("|") == 4]
    if not partition:
        rows = [r for r in rows if r[0].endswith("*")] or rows  # the default partition
    if not rows:
        return f"no partition {partition!r} (sinfo lists: {_partitions()})" if partition else ""
    name = rows[0][0].rstrip("*")
    cpus = max(_int(r[1]) for r in rows)
    mem_mb = max(_int(r[2]) for r in rows)
    gpus = max(sum(_int(m) for m in re.findall(r"gpu(?::[^:,()]+)?:(\d+)", r[3])) for r in rows)
    found = []
    want_cpus = (params.get("cpus_per_task") or 1) * (params.get("tasks_per_node") or 1)
    if cpus and want_cpus > cpus:
        found.append(f"cpus_per_task×tasks_per_node={want_cpus} but its nodes have at most {cpus} CPUs")
    if mem_mb and params.get("mem_gb") and params["mem_gb"] * 1024 > mem_mb:
        found.append(f"mem_gb={params['mem_gb']} but its nodes have at most {mem_mb} MB")
    if params.get("gpus_per_node") and params["gpus_per_node"] > gpus:
        found.append(f"gpus_per_node={params['gpus_per_node']} but its nodes have "
                     f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}")
    limit = _minutes(rows[0][4])
    if limit is not None and params.get("timeout_min") and params["timeout_min"] > limit:
        found.append(f"timeout_min={params['timeout_min']} but its time limit is {limit} min")
    return f"partition {name}: " + "; ".join(found) if found else ""


def _partitions() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    return ", ".join(sorted(set(out))) or "none"


def _int(text: str) -> int:
    m = re.match(r"\d+", text.strip())
    return int(m.group()) if m else 0


def _minutes(text: str) -> int | None:
    """Slurm's ``[days-]hours:minutes:seconds`` (or ``infinite``) in minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return d * 1440 + h * 60 + mi + (s > 0)
