"""Glue for web frameworks and sync apps. The core never imports this package."""
