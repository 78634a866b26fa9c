"""THE runner: one job, for every evaluator. It validates the whole config before any data or weights are read,
reads the data, fingerprints it, looks up the result cache, loads the models through the loading layer, shards the
units across ranks, scores them in batches with one out-of-memory policy, keeps and reads back resume records, times,
aggregates and writes the results. The evaluator (evaluators/base.py) only says what a unit is and how to score it:
its prepare() gives the job's PreparedJob, which the runner scores, checks and aggregates."""

from __future__ import annotations

import copy
import datetime
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from evalkit.config.checks import CheckedConfig, check_config, check_pairing
from evalkit.errors import EvalkitError, Interrupted
from evalkit.evaluators.base import Data, Evaluator, ModelRequest, PreparedJob
from evalkit.job import compile_choice, distributed, run_folder
from evalkit.job.batching import score_in_batches
from evalkit.job.cache import CachedResult, Job, Progress
from evalkit.job.results import EvalResult, results_record, write_run
from evalkit.loading import (
    MODELS,
    LoadedModel,
    check_head,
    load_model,
    model_config,
    model_facts,
    model_fingerprint,
)
from evalkit.loading.compile_policy import eager_for
from evalkit.loading.locations import check_tokenizer


@dataclass
class Plan(CheckedConfig):
    """A validated job: everything knowable from the config and the models' config files."""

    requests: dict[str, ModelRequest] = field(default_factory=dict)
    model_configs: dict[str, Any] = field(default_factory=dict)  # role -> the model's transformers config, read once
    device: Any = None  # the torch.device the options mean here


def plan(cfg) -> Plan:
    """Validate the whole config, in seconds: keys, values, the device, and what the models' configs allow."""
    checked = check_config(cfg)
    device = checked.loading.check()
    evaluator, settings, trust = checked.evaluator, checked.settings, checked.loading.trust_remote_code
    main_config = model_config(checked.config["model"], trust)
    requests = evaluator.models(settings, checked.config["model"], model_facts(main_config))
    configs = {role: main_config if role == "model" else model_config(request.spec, trust)
               for role, request in requests.items()}
    for role, request in requests.items():
        check_pairing(checked, role, request, model_facts(configs[role]))
        check_head(request.spec, configs[role], request.head)
        check_tokenizer(request.spec)
    return Plan(**vars(checked), requests=requests, model_configs=configs, device=device)


def run(cfg, out_dir: Path | None = None, snapshot: Callable[[Path], None] | None = None) -> dict:
    """Evaluate (or reuse an identical job's cached result); with out_dir, claimed first (run_folder.py), write
    `snapshot` (the config, as the command line keeps it), samples.jsonl and results.json there. Returns the results
    record."""
    with run_folder.claimed(out_dir if distributed.is_main() else None, snapshot):  # one rank writes the files
        return run_job(cfg, out_dir)


def run_job(cfg, out_dir: Path | None) -> dict:
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    startup = startup_seconds()
    job = plan(cfg)
    MODELS.start_job()
    data = job.evaluator.read_data(job.config["task"], job.settings, job.run)
    setup = {"setup_seconds": time.perf_counter() - clock, **({"startup_seconds": startup} if startup else {})}
    cache = Job(job.run.cache_dir, job.run.force)
    hashing = time.perf_counter()
    fingerprints = [model_fingerprint(request.spec, job.loading.seed, job.device.type)
                    for request in job.requests.values()]
    setup["fingerprint_seconds"] = time.perf_counter() - hashing  # a new checkpoint's files are hashed here
    hit = cache.lookup(identity(job, data), fingerprints)
    if hit is not None:
        return reuse_cached(hit, out_dir)
    result = evaluate(job, data, cache)
    result.timing.update(setup)
    record = results_record(result, job.config, job.scoped_settings(), started, time.perf_counter() - clock)
    record["run"] = {**cache.summary(), "out_dir": str(out_dir), "models_reused": MODELS.reused}
    if job.run.limit is not None:  # tokens for perplexity, examples elsewhere: said where the figures are
        task = job.config["task"]
        read = job.evaluator.limit_read(record["metrics"], task)
        record["data"]["limit"] = {"first": job.run.limit, "of": job.evaluator.limit_counts(task),
                                   "cut": read is None or read >= job.run.limit}
    if distributed.is_main():  # under torchrun every rank holds the full result; one writes it
        cache.finish(record, result.samples)
        if out_dir is not None:
            write_results(out_dir, record, result.samples, cached=cache.entry is not None)
    return record


def write_results(out_dir: Path, record: dict, samples: list[dict], cached: bool) -> None:
    """The run's files, as one line of error when they cannot be written (a finished results.json is never
    replaced)."""
    rerun = "; the result is cached: rerun with another hydra.run.dir to get it without recomputing" if cached else ""
    try:
        write_run(out_dir, record, samples)
    except FileExistsError:  # the folder is claimed: only a process that ignores claims can have written it
        raise EvalkitError(f"{out_dir / 'results.json'} was written by another process while this run held the "
                           f"folder; it is kept{rerun}") from None
    except (OSError, ValueError) as error:  # ValueError: a non-finite number, which strict JSON refuses
        reason = getattr(error, "strerror", None) or str(error)
        raise EvalkitError(f"could not write the results into {out_dir} ({reason}){rerun}") from None


JOB_STARTED = False  # whether a job has started in this process


def startup_seconds() -> float | None:
    """The process's age as its first job starts (interpreter and imports: the start-up a user waits for); None for
    every later job, which a sweep starts in a running process."""
    global JOB_STARTED
    first, JOB_STARTED = not JOB_STARTED, True
    return process_age() if first else None


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc: interpreter and imports included), None elsewhere."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def identity(job: Plan, data: Data) -> dict:
    """What makes two jobs the same (with the models' fingerprints and the library versions, added by the cache)."""
    return {"evaluator": job.evaluator.name, "settings": job.scoped_settings(), "model": job.config["model"],
            "task": job.config["task"], "data": data.fingerprint}


def load_models(job: Plan) -> dict:
    unquantized = replace(job.loading, quantization="none")
    return {role: load_model(request.spec, unquantized if request.unquantized else job.loading, request.head,
                             job.model_configs[role])
            for role, request in job.requests.items()}


def evaluate(job: Plan, data: Data, cache: Job) -> EvalResult:
    """Load, prepare the units, score this rank's share of those not done before, aggregate every rank's."""
    distributed.init(job.device)  # before loading: tensor parallelism shards the weights over the process group
    clock = time.perf_counter()
    loaded_models = load_models(job)  # a sweep's jobs share them: each job keeps its own record of them
    models = {role: replace(model, provenance=copy.deepcopy(model.provenance))
              for role, model in loaded_models.items()}
    main = models["model"]
    loaded = time.perf_counter()
    prepared = job.evaluator.prepare(job.settings, job.run, job.config["task"], data, models)
    phases = {"load_seconds": loaded - clock, "prepare_seconds": time.perf_counter() - loaded}
    progress = cache.progress(prepared.units.count, prepared.check_record)
    distributed.barrier()  # every rank has read the earlier attempts' records before any rank appends this one's
    if cache.resumed:
        print(f"evalkit: resuming an interrupted run: {cache.resumed} of {prepared.units.count} "
              f"{job.evaluator.unit_name}s were finished before and are reused", file=sys.stderr)
    units = prepared.units
    remaining = sum(units.amounts) - sum(units.amounts[i] for i in progress.done)
    compiling = compile_choice.choose(job, loaded_models["model"], main.provenance, remaining)
    with nullcontext() if compiling.compiled else eager_for(main.model):  # a model an earlier job compiled
        records, timing = score_units(job, prepared, progress, main, compiling.compiled, remaining)
    compile_choice.finish(compiling, timing, remaining)
    outcome = prepared.aggregate(records, timing[f"{job.evaluator.throughput}_per_second"])
    provenance = main.provenance
    if "reference" in models:
        provenance = {**provenance, "reference": models["reference"].provenance}
    return EvalResult(metrics=outcome.metrics, samples=outcome.samples, model=provenance,
                      data={"sha256": data.fingerprint, **outcome.data},
                      timing={**phases, **timing, **outcome.timing})


def score_units(job: Plan, prepared: PreparedJob, progress: Progress, main: LoadedModel, compiled: bool,
                remaining: float) -> tuple[list, dict]:
    """Every unit's record, in unit order, and the timing of the units this run computed (`remaining`: their amount
    of work, every rank's). A compiled model runs a batch smaller than the batch size (a group's remainder, a lone
    unit) eagerly: a shape seen once is not worth a compile."""
    device = main.device
    evaluator, units = job.evaluator, prepared.units
    tensor_parallel = bool(job.loading.tp_plan)
    mine = distributed.shard(units.order or list(range(units.count)), tensor_parallel)
    todo = [i for i in mine if i not in progress.done]
    auto = job.run.batch_size == "auto"
    size = min(prepared.auto_batch_size(device), max(len(todo), 1)) if auto else job.run.batch_size
    computed: dict[int, dict] = {}
    warming = time.perf_counter()
    # under inference_mode as the timed pass runs, so that it readies that pass's code paths (autograd's differ)
    with torch.inference_mode(), eager_for(main.model) if compiled else nullcontext():  # a lone unit: no compile
        prepared.warm_up(todo)
    warm_up_seconds = time.perf_counter() - warming
    total = sum(units.amounts[i] for i in todo)
    if all(float(amount).is_integer() for amount in units.amounts):  # tokens, examples: 16/40, not 16.0/40.0
        total = int(total)
    bar = tqdm(total=total, unit=evaluator.progress_unit,
               desc=evaluator.name, dynamic_ncols=True, disable=not distributed.is_main())

    def keep(batch: list[int], records: list[dict]) -> None:
        check_finite(evaluator, batch, records)
        progress.save(batch, records)
        computed.update(zip(batch, records))
        bar.update(type(total)(sum(units.amounts[i] for i in batch)))

    with bar, torch.inference_mode():
        started = time.perf_counter()
        try:
            size = score_in_batches(todo, size, auto, prepared.score, keep, units.groups, device,
                                    (lambda: eager_for(main.model)) if compiled else None)
        except KeyboardInterrupt:
            raise Interrupted(len(progress.done) + len(computed), progress.path is not None) from None
        merged = distributed.gather_records({**{i: progress.done[i] for i in mine if i in progress.done}, **computed},
                                            tensor_parallel)
        seconds = time.perf_counter() - started
    per_rank = distributed.gather(len(computed))
    timing = {"warm_up_seconds": warm_up_seconds, "eval_seconds": seconds,
              f"{evaluator.throughput}_per_second": remaining / seconds if seconds else 0.0,
              "batch_size": size, "processes": distributed.world_size(),
              "tensor_parallel": distributed.world_size() if tensor_parallel else 1,
              "units_computed": units.count - len(progress.done), "units_computed_per_rank": per_rank}
    return [merged[i] for i in range(units.count)], timing


def non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(non_finite(item) for item in value)
    return False


def check_finite(evaluator: Evaluator, batch: list[int], records: list[dict]) -> None:
    """A NaN or infinite score is never a result: stop at the first unit that produced one."""
    for index, record in zip(batch, records):
        for key, value in record.items():
            if non_finite(value):
                raise EvalkitError(f"{evaluator.unit_name} {index} scored a non-finite {key} (NaN or infinity): the "
                                   "model's outputs are not finite there; nothing is written or cached")


def reuse_cached(hit: CachedResult, out_dir: Path | None) -> dict:
    """Copy a cached result (checked against its samples) into this run's folder, saying where and when it was
    computed."""
    record = hit.record
    print(f"evalkit: cache hit: this model, data and settings were evaluated in {record['run']['out_dir']} "
          f"(started {record['started_at']}); result copied, nothing recomputed (force=true recomputes)",
          file=sys.stderr)
    reused_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record["run"] = {**record["run"], "cache_hit": True, "out_dir": str(out_dir),
                     "computed_in": record["run"]["out_dir"], "reused_at": reused_at}
    if distributed.is_main() and out_dir is not None:
        write_results(out_dir, record, hit.samples, cached=True)
    return record
