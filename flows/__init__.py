"""Prefect flows that wire changedet library functions into scheduled and on-demand runs.

Nothing here computes: every task calls one library function (``changedet.pipeline``),
so a person can do the same work from Python or the CLI without a Prefect server.
"""
