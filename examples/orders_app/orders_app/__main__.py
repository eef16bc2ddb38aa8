"""python -m orders_app [--port 8000]: serve the app with uvicorn (worker embedded)."""

import argparse

import uvicorn

from .web import create_app

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
parser.add_argument("--worker-name")
args = parser.parse_args()
uvicorn.run(
    create_app(worker_name=args.worker_name), host=args.host, port=args.port, log_level="warning"
)
