"""The ``chathist`` command line (`main`): run DynamoDB Local, create tables, inspect, export,
import and migrate sessions. One module per topic: `local`, `tables`, `sessions`, `migrate`;
`common` holds what they share."""

from chathist.cli.main import main

__all__ = ["main"]
