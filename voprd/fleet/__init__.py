"""Fleet: many daemons share one seed space through S3 leases (issue 7)."""
