"""One job, for every evaluator: the runner, its result cache and progress log, results, sharding over ranks,
batching with one out-of-memory policy."""
