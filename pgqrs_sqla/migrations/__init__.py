"""The shipped Alembic branch (label ``pgqrs``): versioned revisions of the pgqrs tables.

Add ``pgqrs_sqla.alembic_support.version_location()`` (or ``pgqrs_sqla:migrations/versions``)
to your ``version_locations`` and run ``alembic upgrade heads``.
"""
