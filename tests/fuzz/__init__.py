"""atheris fuzz targets; run them with ``python -m tests.fuzz.run`` (``make fuzz``).

File names start with ``fuzz_`` so pytest never collects them; ``tests/test_fuzz_smoke.py``
runs each for a few seconds as part of ``make test``.
"""
