"""Shared pytest plugins (the moto server fixtures of the AWS tests: tests/aws_fixtures.py)."""

pytest_plugins = ["tests.aws_fixtures"]
