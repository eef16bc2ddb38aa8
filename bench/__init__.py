"""pgqrs-sqla benchmarks, measured against the raw driver on the same database.

Run ``python -m bench --help`` (or ``make bench``); the results and their analysis are in
``docs/benchmarks.md``.
"""
