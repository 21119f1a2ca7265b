"""The ``perdure`` command line (``python -m perdure``)."""
