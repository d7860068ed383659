"""``python -m streamer.bench``: the end-to-end benchmark (:mod:`streamer.bench.e2e`)."""

from streamer.bench.e2e import main

main()
