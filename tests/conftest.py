"""Shared pytest plugins. The moto server fixtures for the AWS tests live in tests/aws_fixtures.py."""

pytest_plugins = ["tests.aws_fixtures"]
