"""Studies: many ordinary training runs of one base config, sampled and pruned by Optuna.

``spec`` reads and checks a study config, ``runner`` runs its trials as ``flaxcnn.train``
processes (resumably), ``report`` turns the trials' workdirs into a leaderboard and plots.
"""
