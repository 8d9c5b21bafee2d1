"""Edge circuits: which edges between components carry a task's answer.

- ``edges``: edge attribution patching (EAP, EAP-IG) over every edge of the computational graph.
- ``circuit_graph``: ranking, thresholding and pruning edges into a connected circuit.
- ``faithfulness``: how much of the metric a circuit of n edges recovers when the rest is ablated.
"""
