"""Started by torchrun for tests/test_contract.py: several evaluation jobs one after another in the same processes, as
a user's script calling evalkit.evaluate again or a command-line sweep runs them.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.torchrun_jobs steps.json

(-m from the repository root, as `-m evalkit`: the checkout's evalkit is imported, not an installed one.)

steps.json is a list of steps, each {"evaluate": keywords of evalkit.evaluate}, {"command_line": arguments of
`python -m evalkit`} (run in this process as `python -m evalkit` runs them) or {"rank_0_waits": seconds} (rank 0
starts the next job late, as a rank 0 busy writing files does, while the other rank goes on). For compile=auto:
{"environment_by_rank": {NAME: [rank 0's value, rank 1's]}}, {"device_name": NAME} (compile=auto chooses as on a GPU
of that name: compile_choice's seam) and {"measured": an entry, "into": a folder} (rank 0 writes the entry under the
name of every entry its own store holds, in that folder: another rank's store)."""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
from pathlib import Path

import evalkit
from evalkit.job import compile_choice


def run_steps(steps: list[dict]) -> None:
    for step in steps:
        if "command_line" in step:
            sys.argv = ["evalkit", *step["command_line"]]
            runpy.run_module("evalkit", run_name="__main__", alter_sys=True)
        elif "rank_0_waits" in step:
            if os.environ["RANK"] == "0":
                time.sleep(step["rank_0_waits"])
        elif "environment_by_rank" in step:
            os.environ.update({name: values[int(os.environ["RANK"])]
                               for name, values in step["environment_by_rank"].items()})
        elif "device_name" in step:
            compile_choice.device_name = lambda device, name=step["device_name"]: name
        elif "measured" in step:
            if os.environ["RANK"] == "0":
                for entry in Path(os.environ["EVALKIT_COMPILE_CACHE"]).glob("*.json"):
                    (Path(step["into"]) / entry.name).write_text(json.dumps(step["measured"]), encoding="utf-8")
        else:
            evalkit.evaluate(**step["evaluate"])


if __name__ == "__main__":
    run_steps(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
