"""flaxcnn: small image classifiers trained fast, measurably and reproducibly with JAX.

Importing it changes no process state; the commands set that up (``flaxcnn.cli.start``).
"""
