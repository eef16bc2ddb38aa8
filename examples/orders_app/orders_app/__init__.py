"""A small orders app that uses pgqrs-sqla: see examples/orders_app/README.md."""
