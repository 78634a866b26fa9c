"""Any lm-evaluation-harness task, group or tag, built and scored by lm-eval's own code around evalkit's request
layer: lm-eval builds the tasks and their requests (building.py, with its seeds, few-shot and chat template), each
request is one evalkit unit answered by CausalLM (requests.py), and the responses go back to lm-eval's filters,
process_results, aggregation and groups (results.py). results.json's `results` holds lm-eval's figures under its own
keys (`acc,none`, `acc_stderr,none`) with evalkit's intervals beside them (`acc_ci95,none`). lm-eval is optional
(`pip install 'evalkit[lm-eval]'`): this module imports neither it nor torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from evalkit.config.settings import setting
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import Data, Evaluator, Metric, ModelRequest
from evalkit.evaluators.lm_eval_tasks.building import OTHER_SEED, require_lm_eval, task_names


@dataclass(frozen=True)
class Settings:
    num_fewshot: int | None = setting(None, "examples ahead of each document, for every task whose YAML does not set "
                                      "0 (lm-eval's --num_fewshot); null: each task's own", minimum=0)
    apply_chat_template: bool = setting(False, "render the prompts with the tokenizer's chat template (lm-eval's "
                                        "--apply_chat_template)")
    system_instruction: str | None = setting(None, "a system prompt ahead of each prompt (lm-eval's "
                                             "--system_instruction)")
    fewshot_as_multiturn: bool = setting(True, "with apply_chat_template: each few-shot example its own user and "
                                         "assistant turns (lm-eval's simple_evaluate default)",
                                         only_with={"apply_chat_template": True})
    bootstrap_iters: int = setting(100000, "lm-eval's bootstrap resamples for the standard errors of metrics "
                                   "without a closed form (perplexity, bleu, ...); 0: no standard errors", minimum=0)


class LmEvalTasks(Evaluator):
    name = "lm_eval_tasks"
    Settings = Settings
    throughput = "requests"
    progress_unit = "req"
    unit_name = "request"
    task_keys = ("names", "include_path", "include_defaults")
    metrics = (
        Metric("score", "the first higher-is-better figure of the named tasks and groups, in their order (which: "
               "score_metric); where all are lower-is-better (perplexities), the first, and score_higher_is_better "
               "is false", True, headline=True, interval="score_ci95"),
        Metric("score_metric", "which task or group and lm-eval metric `score` is", None),
        Metric("score_higher_is_better", "false only where `score` is a lower-is-better figure", None),
        Metric("results", "lm-eval's results per task and group: its metric keys (acc,none), their standard errors "
               "(acc_stderr,none) and evalkit's 95% intervals (acc_ci95,none)", None, breakdown="task"),
        Metric("groups", "lm-eval's groups with an aggregate, and their figures", None),
        Metric("documents", "documents evaluated over every task", None, count=True),
        Metric("requests", "requests scored (lm-eval's instances)", None, count=True, units=True),
    )

    def validate(self, settings: Settings, run, task: Mapping, model=None) -> Settings:
        require_lm_eval()
        task_names(task)
        include_path = task.get("include_path")
        if include_path is not None and not isinstance(include_path, str):
            raise EvalkitError(f"task.include_path={include_path} is not allowed; allowed: a folder of lm-eval task "
                               "YAMLs, or null")
        if not isinstance(task.get("include_defaults", True), bool):
            raise EvalkitError(f"task.include_defaults={task.get('include_defaults')} is not allowed; allowed: true "
                               "or false")
        return settings

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        return {"model": ModelRequest(model, "causal-lm")}

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        """lm-eval's requests without a chat template (which needs the tokenizer: prepare() builds the requests again
        with it, from the tasks loaded here); their fingerprint with the model's and the settings' decides the job's
        identity."""
        from evalkit.evaluators.lm_eval_tasks.building import build, fingerprint

        built = build(task, settings, run.limit)
        return Data(built, fingerprint(built), built.origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict):
        from evalkit.evaluators.lm_eval_tasks.building import with_chat_template
        from evalkit.evaluators.lm_eval_tasks.chat import chat_template, tokenizer_name
        from evalkit.evaluators.lm_eval_tasks.requests import RequestsJob
        from evalkit.scoring.causal_lm import CausalLM

        lm = CausalLM(models["model"])
        built = data.content
        if settings.apply_chat_template:
            built = with_chat_template(built, settings, run.limit, chat_template(lm),
                                       tokenizer_name(lm.tokenizer))
        return RequestsJob(lm, built, settings.bootstrap_iters, OTHER_SEED)


EVALUATOR = LmEvalTasks()
