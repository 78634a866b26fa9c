"""The leaderboard of a folder of runs: collect results.json files, compare like with like, write tables, plots, a
page and lm-evaluation-harness-style exports. Torch-free."""
