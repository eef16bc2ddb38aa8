# A generic Alembic configuration with the pgqrs migration branch wired in.

[alembic]
script_location = ${script_location}
prepend_sys_path = .

# path_separator = space, not os: the pgqrs branch is named as a package resource,
# "pgqrs_sqla:migrations/versions", and "os" would split that on its colon (POSIX).
# (If this project's path contains spaces, use "newline" and one location per line.)
path_separator = space
version_locations = ${script_location}/versions pgqrs_sqla:migrations/versions

# Your models, as "module:attribute": a DeclarativeBase subclass or a MetaData. If your
# models use pgqrs (pgqrs_sqla.pgqrs_models(Base) in that module), this is that Base; its
# naming convention then also names the keys of the pgqrs tables the shipped branch creates.
# Left empty, env.py uses pgqrs's own metadata only.
pgqrs_target_metadata =

# How autogenerate treats the pgqrs tables: "exclude" (the shipped pgqrs branch above
# manages them; autogenerate neither creates nor drops them) or "include" (your Base carries
# them and autogenerate writes them into your own history; then drop the pgqrs location
# from version_locations).
pgqrs_tables = exclude

# The URLs pgqrs_sqla.connect() takes: postgresql://user:pw@host/db or sqlite:///app.db.
sqlalchemy.url = sqlite:///app.db


[post_write_hooks]
# post_write_hooks defines scripts or Python functions that are run
# on newly generated revision scripts.  See the documentation for further
# detail and examples

# format using "black" - use the console_scripts runner, against the "black" entrypoint
# hooks = black
# black.type = console_scripts
# black.entrypoint = black
# black.options = -l 79 REVISION_SCRIPT_FILENAME

# lint with attempts to fix using "ruff" - use the module runner, against the "ruff" module
# hooks = ruff
# ruff.type = module
# ruff.module = ruff
# ruff.options = check --fix REVISION_SCRIPT_FILENAME

# Alternatively, use the exec runner to execute a binary found on your PATH
# hooks = ruff
# ruff.type = exec
# ruff.executable = ruff
# ruff.options = check --fix REVISION_SCRIPT_FILENAME

# Logging configuration.  This is also consumed by the user-maintained
# env.py script only.
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
