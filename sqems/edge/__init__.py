"""The edge tier: what runs on a line's own machine beside its broker (``sqems edge``).

Portable, signed models (:mod:`sqems.edge.portable`), the store-and-forward queue
(:mod:`sqems.edge.queue`) and its forwarder to the central broker
(:mod:`sqems.edge.forwarder`), and the agent that judges the line's units and keeps
SPC running when the network is gone (:mod:`sqems.edge.agent`). See docs/edge.md.
"""
