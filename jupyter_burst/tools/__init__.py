"""What users run from a shell: the ``jupyter burst`` command, the demo runner and the cloud
smoke checks."""
