"""Real mail servers on this machine, private and throw-away: for the demo and the tests.

``postfix.PrivatePostfix`` runs Debian's Postfix from a temp dir with its own config,
queue, ports and log; ``capture.CaptureServer`` is the SMTP server mail ends up on;
``ports`` picks loopback ports and probes servers for readiness (never a fixed sleep).
"""
