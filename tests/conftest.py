"""Shared pytest plugins: the moto server fixtures of the AWS tests (tests/aws_fixtures.py) and the
example system plugin on the path (tests/plugin_support.py)."""

pytest_plugins = ["tests.aws_fixtures", "tests.plugin_support"]
