import sys

from streamer.schema import render

sys.stdout.write(render())
