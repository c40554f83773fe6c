"""The plant's digital twin: models learnt from the plant's history that a simulation
can run forward.

:mod:`sqems.twin.quality` holds the defect model of one process step, a Bayesian
hierarchical logistic regression whose posterior draws feed the simulation. The
modules here take and return plain numbers (numpy arrays); reading the training data
from the plant graph is the caller's job, so the models can be fitted, tested and saved
without a store.

Nothing is imported here: importing a module of the twin is a deliberate choice, because
fitting pulls in PyMC and its compiler.
"""
