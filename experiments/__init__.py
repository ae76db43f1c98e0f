"""Experiment configs, sweeps, the results store, reports and the ``simcim`` CLI.

``experiments.load(run_dir)`` returns a run's stored trials as a pandas DataFrame.
"""

from experiments.store import load

__all__ = ["load"]
