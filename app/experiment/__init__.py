"""The experiment file: `schema` (its sections and keys), `rules` (what keys must agree on), `hosts` and
`credentials` (what is resolved around it), `load` (all of it in order) and `resolved` (the `Experiment` it gives).
The names most code needs are here."""

from app.experiment.credentials import MySQLCredentials
from app.experiment.load import load_experiment
from app.experiment.resolved import Experiment

__all__ = ["Experiment", "MySQLCredentials", "load_experiment"]
