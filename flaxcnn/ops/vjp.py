"""The custom_vjp shape most routes share: a forward pass that keeps only its inputs."""

from __future__ import annotations

from collections.abc import Callable

import jax


def keeping_inputs(backward: Callable, nondiff_argnums: tuple[int, ...] = (2, 3)) -> Callable:
    """Decorator: ``forward`` as a ``jax.custom_vjp`` whose residuals are its differentiable
    arguments, in order, and whose backward pass is ``backward(*nondiff, residuals, g)``.

    The static arguments (stride, padding) are ``nondiff_argnums``.
    """

    def decorate(forward: Callable) -> Callable:
        def forward_with_inputs(*args):
            kept = tuple(a for i, a in enumerate(args) if i not in nondiff_argnums)
            return forward(*args), kept

        route = jax.custom_vjp(forward, nondiff_argnums=nondiff_argnums)
        route.defvjp(forward_with_inputs, backward)
        return route

    return decorate
