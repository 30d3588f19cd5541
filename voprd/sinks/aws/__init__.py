"""The AWS backend (S3, CloudWatch Logs and metrics, SNS), behind the durable outbox.

Imported lazily by voprd.sinks.factory only when a bucket is configured.
"""

from voprd.sinks.aws.backend import AwsBackend, AwsTuning, make_aws_backend

__all__ = ["AwsBackend", "AwsTuning", "make_aws_backend"]
