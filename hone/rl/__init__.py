"""The RL loop over a Backend: trajectories and groups, gathering rollouts, datums, one training
step (`step.train_step`), the run itself (`loop.run_training`: resume, sample, score, train,
checkpoint, log) and evaluation.

Knows backends only through `hone.backends.Backend`, and rewards only as numbers on trajectories
or through a scoring hook: it never imports `hone.rewards` (which builds on it).
"""
