"""Corpus browsing: where in a text corpus a component matters.

- ``browse_components``: which components can be browsed (heads, MLPs, neurons, features) and their names.
- ``browse``: the effect of ablating a component on every token of a corpus, ranked.
- ``browse_example``: one corpus position in detail (predictions before/after, lens, attention, DLA).
"""
