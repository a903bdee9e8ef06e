"""flaxcnn: small image classifiers trained fast, measurably and reproducibly with JAX."""

from flaxcnn import malloc

malloc.limit_arenas()  # before XLA starts its threads
