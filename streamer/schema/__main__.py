"""``python -m streamer.schema``: print the JSON Schema of the output events."""

from __future__ import annotations

import sys

from streamer.schema import build_parser, render

build_parser().parse_args()
sys.stdout.write(render())
