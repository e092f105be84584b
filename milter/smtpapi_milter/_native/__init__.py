"""Compiled helpers. Each has a pure-Python reference that tests compare it with;
SMTPAPI_PURE_PYTHON=1 forces the references."""
