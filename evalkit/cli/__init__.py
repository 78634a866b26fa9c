"""The command line around one job, torch-free until the job starts: first line on screen, checks, --help, the
summary table, sweeps."""
